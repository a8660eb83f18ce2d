"""Sealed gossip datagrams: AES-256-GCM under a keyring, with a replay window per sender.

A sealed datagram is ``HEADER NONCE CIPHERTEXT`` where HEADER is ``b"QS"``, a format byte, the
4-byte id of the key that sealed it, the sender's name (one length byte, then UTF-8) and a
64-bit sequence number; the header is authenticated as associated data, the wire-codec message
(gossip.wire) is the plaintext, and the nonce is 12 random bytes per message.

The sequence number is the sender's wall clock in microseconds, bumped by one when two messages
fall in the same microsecond, so it grows across restarts. A receiver accepts a sequence number
once: never below its window's floor (the sender's highest minus ``window`` seconds, or the
oldest of the ``max_remembered`` it remembers), never more than ``horizon`` seconds away from its
own clock (peers need clocks within ``horizon`` of each other), never twice.

The keyring holds every key a peer accepts; the first ("primary") is the one it seals with. A key
is rotated without downtime as memberlist does: install the new key everywhere (``add``), make
it primary everywhere (``use``), then remove the old one (``remove``).

Pure: no reactor, no I/O beyond ``os.urandom``; times are passed in.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossip.wire import WireError

KEY_SIZE = 32
KEY_ID_SIZE = 4
NONCE_SIZE = 12
TAG_SIZE = 16
MAGIC = b"QS"
FORMAT = 1
MAX_NAME = 64
SEQ = struct.Struct(">Q")
KEY_ID_CONTEXT = "quorumfs 2026-12-01 gossip key id v1"
OVERHEAD = len(MAGIC) + 1 + KEY_ID_SIZE + 1 + MAX_NAME + SEQ.size + NONCE_SIZE + TAG_SIZE
"""The most bytes sealing adds to a message (with the longest sender name)."""

DEFAULT_WINDOW = 10.0
DEFAULT_HORIZON = 120.0
DEFAULT_MAX_REMEMBERED = 4096
DEFAULT_MAX_SENDERS = 4096


def key_id(key: bytes) -> bytes:
    """The 4-byte id a datagram names its key by (a keyed hash: it reveals nothing of the key)."""
    return blake3.blake3(key, derive_key_context=KEY_ID_CONTEXT).digest()[:KEY_ID_SIZE]


def new_key() -> bytes:
    """A fresh random gossip key."""
    return os.urandom(KEY_SIZE)


@dataclass(frozen=True)
class Keyring:
    """The keys a peer accepts, primary (the one it seals with) first; at least one."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        for key in self.keys:
            if len(key) != KEY_SIZE:
                raise ValueError(f"a gossip key is {KEY_SIZE} bytes, got {len(key)}")
        ids = [key_id(k) for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("the keyring holds the same key twice")

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    def ids(self) -> list[str]:
        """Hex ids of the keys, primary first (what `qfs cluster key list` and /v1/cluster show)."""
        return [key_id(k).hex() for k in self.keys]

    def find(self, wanted: str) -> bytes:
        """The key whose hex id starts with `wanted`; ValueError if none or several."""
        matches = [k for k in self.keys if key_id(k).hex().startswith(wanted.lower())]
        if len(matches) != 1:
            problem = "no key" if not matches else "several keys"
            raise ValueError(f"{problem} in the keyring with id {wanted!r}")
        return matches[0]

    def add(self, key: bytes) -> Keyring:
        """Install `key` for receiving (memberlist's AddKey); the primary stays."""
        if key_id(key) in {key_id(k) for k in self.keys}:
            raise ValueError(f"key {key_id(key).hex()} is already installed")
        return Keyring((*self.keys, key))

    def use(self, wanted: str) -> Keyring:
        """Make the installed key with id `wanted` the primary (UseKey)."""
        key = self.find(wanted)
        return Keyring((key, *(k for k in self.keys if k != key)))

    def remove(self, wanted: str) -> Keyring:
        """Uninstall the key with id `wanted` (RemoveKey); the primary cannot be removed."""
        key = self.find(wanted)
        if key == self.primary:
            raise ValueError(f"key {wanted} is the primary: make another key primary first")
        return Keyring(tuple(k for k in self.keys if k != key))

    def dumps(self) -> str:
        """The keyring file's text: one base64 key per line, primary first."""
        lines = ["# quorumfs gossip keyring: one base64 key per line, the first seals"]
        lines += [base64.b64encode(k).decode() for k in self.keys]
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str) -> Keyring:
        """Parse a keyring file; ValueError naming the bad line."""
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys.append(base64.b64decode(line, validate=True))
            except (binascii.Error, ValueError):
                raise ValueError(f"line {number} is not a base64 key") from None
        return cls(tuple(keys))


@dataclass
class _Window:
    floor: int = -1  # every sequence number <= floor is refused
    highest: int = -1
    seen: list[int] = field(default_factory=list)  # a heap of accepted numbers > floor
    members: set[int] = field(default_factory=set)


class ReplayWindow:
    """Which (sender, sequence number) pairs were accepted recently, bounded per sender and in
    senders; `check` refuses a replay or a stale number, `accept` records one that checked out.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        horizon: float = DEFAULT_HORIZON,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        self._window = int(window * 1e6)
        self._horizon = int(horizon * 1e6)
        self._max_remembered = max_remembered
        self._max_senders = max_senders
        self._senders: OrderedDict[str, _Window] = OrderedDict()

    def check(self, sender: str, seq: int, now: float) -> None:
        """Raise WireError if `seq` from `sender` must not be accepted at wall time `now`."""
        now_us = int(now * 1e6)
        if abs(seq - now_us) > self._horizon:
            raise WireError(
                f"datagram from {sender!r} is {abs(seq - now_us) / 1e6:.0f}s away from this "
                "peer's clock (a replay, or clocks out of step)"
            )
        w = self._senders.get(sender)
        if w is not None and (seq <= w.floor or seq in w.members):
            raise WireError(f"replayed or stale datagram from {sender!r} (sequence {seq})")

    def accept(self, sender: str, seq: int) -> None:
        """Record `seq` from `sender` (after `check` passed and the datagram authenticated)."""
        w = self._senders.get(sender)
        if w is None:
            w = self._senders[sender] = _Window()
            if len(self._senders) > self._max_senders:
                self._senders.popitem(last=False)
        self._senders.move_to_end(sender)
        heapq.heappush(w.seen, seq)
        w.members.add(seq)
        w.highest = max(w.highest, seq)
        while w.seen and (
            w.seen[0] <= w.highest - self._window or len(w.seen) > self._max_remembered
        ):
            dropped = heapq.heappop(w.seen)
            w.members.discard(dropped)
            w.floor = max(w.floor, dropped)
        w.floor = max(w.floor, w.highest - self._window)


class DatagramSealer:
    """Seals this peer's datagrams with the keyring's primary and opens anyone's sealed with
    any key of the keyring, refusing replays. Replace ``keyring`` to rotate keys."""

    def __init__(self, keyring: Keyring, sender: str, replay: ReplayWindow | None = None) -> None:
        encoded = sender.encode()
        if not 0 < len(encoded) <= MAX_NAME:
            raise ValueError(f"sender name must be 1-{MAX_NAME} bytes")
        self._sender = bytes([len(encoded)]) + encoded
        self._replay = replay or ReplayWindow()
        self._last_seq = 0
        self.keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers = {key_id(k): AESGCM(k) for k in keyring.keys}
        self._primary_id = key_id(keyring.primary)

    def seal(self, message: bytes, now: float) -> bytes:
        """`message` (a wire-codec datagram) sealed for sending at wall time `now`."""
        seq = max(self._last_seq + 1, int(now * 1e6))
        self._last_seq = seq
        header = b"".join([MAGIC, bytes([FORMAT]), self._primary_id, self._sender, SEQ.pack(seq)])
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + self._ciphers[self._primary_id].encrypt(nonce, message, header)

    def open(self, datagram: bytes, now: float) -> tuple[str, bytes]:
        """(sender, message) of a sealed datagram received at wall time `now`; WireError if it
        is not sealed with a key of the keyring, was tampered with, or is a replay."""
        view = memoryview(datagram)
        fixed = len(MAGIC) + 1 + KEY_ID_SIZE + 1
        if len(view) < fixed or bytes(view[:2]) != MAGIC:
            raise WireError("not a sealed gossip datagram (this cluster encrypts gossip)")
        if view[2] != FORMAT:
            raise WireError(f"unknown sealed datagram format {view[2]}")
        cipher = self._ciphers.get(bytes(view[3 : 3 + KEY_ID_SIZE]))
        if cipher is None:
            raise WireError("datagram sealed with a key this peer does not hold")
        name_end = fixed + view[fixed - 1]
        header_end = name_end + SEQ.size
        if view[fixed - 1] == 0 or len(view) < header_end + NONCE_SIZE + TAG_SIZE:
            raise WireError("sealed datagram too short")
        try:
            sender = bytes(view[fixed:name_end]).decode()
        except UnicodeDecodeError:
            raise WireError("sealed datagram sender is not UTF-8") from None
        (seq,) = SEQ.unpack_from(view, name_end)
        self._replay.check(sender, seq, now)
        header = bytes(view[:header_end])
        nonce = bytes(view[header_end : header_end + NONCE_SIZE])
        try:
            message = cipher.decrypt(nonce, bytes(view[header_end + NONCE_SIZE :]), header)
        except InvalidTag:
            raise WireError("sealed datagram failed authentication") from None
        self._replay.accept(sender, seq)
        return sender, message

