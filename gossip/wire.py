"""The wire codec: every message between peers (gossip datagrams, peer RPC frames) goes through it.

A message is ``HEADER [MAC] CBOR`` where HEADER is the magic byte ``Q`` plus a flags byte, MAC is
a 32-byte keyed BLAKE3 tag over header and payload (present exactly when a cluster key is set),
and CBOR is the array ``[version, type, body]`` with ``body`` a map with string keys.

Invariants: a peer with a cluster key accepts only messages tagged with that key; a peer without
one accepts only untagged messages, so peers configured with different keys never talk. Anything
malformed, oversized, unauthenticated or of another protocol version raises ``WireError``, and
nothing else: callers catch one exception type at every input boundary.

Streams carry frames: a 4-byte big-endian length, then one message. The length is checked
against the maximum before any of the frame is buffered. A server's decoder holds a connection
to FIRST_FRAME_MAX until one frame has been verified (with a cluster key: its MAC checked), so
nobody buffers a large frame on a peer before authenticating; a client opens with ``hello()``,
a tiny frame that the decoder verifies and consumes.

Decoding is bounded before any value is built (``gossip.cbor``): no CBOR tag of any kind, at
most MAX_NESTING levels, at most as many items as bytes, and no error message quotes more than
a short escaped prefix of what was received.
"""

from __future__ import annotations

import hmac
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

import blake3
import cbor2

from gossip.cbor import BadCBOR, excerpt, loads

PROTOCOL_VERSION = 1
MAX_DATAGRAM = 1400
DEFAULT_MAX_FRAME = 16 * 1024 * 1024 + 64 * 1024

MAGIC = 0x51  # "Q"
FLAG_MAC = 0x01
MAC_SIZE = 32
LENGTH_PREFIX = struct.Struct(">I")
KEY_CONTEXT = "quorumfs 2026-11-22 cluster message authentication v1"
MIN_KEY_BYTES = 16
MAX_NESTING = 32
FIRST_FRAME_MAX = 64 * 1024
HELLO = "hello"
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9._]{0,63}")

T = TypeVar("T")


class WireError(ValueError):
    """Input that is not a valid message for this peer; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One decoded message: a type name and a CBOR map body."""

    type: str
    body: dict[str, Any]

    def field(self, name: str, kind: type[T] | tuple[type, ...], *, default: Any = ...) -> T:
        """The body field ``name``, checked to be of ``kind``; WireError names what is wrong.

        ``bool`` is never accepted where ``int`` is asked for.
        """
        if name not in self.body:
            if default is not ...:
                return default
            raise WireError(f"{self.type}: missing field {name!r}")
        value = self.body[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise WireError(f"{self.type}: field {name!r} must be {_kind_names(kinds)}, got bool")
        if not isinstance(value, kinds):
            got = type(value).__name__
            raise WireError(f"{self.type}: field {name!r} must be {_kind_names(kinds)}, got {got}")
        return value  # type: ignore[return-value]


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


def read_private_file(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    """Up to `limit` bytes of a secret file (surrounding whitespace stripped); WireError, which
    names `what` the file is, if it cannot be read or, as ssh does with private keys, if group
    or others may read or write it (whoever reads a secret holds it)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise WireError(
                    f"{what} file {name}: permissions {mode:04o} are too open: it must not be "
                    f"readable or writable by group or others (chmod 600 {name})"
                )
            return f.read(limit).strip()
    except OSError as e:
        raise WireError(f"{what} file {name}: {e.strerror}") from None


def load_cluster_key(path: str | os.PathLike[str]) -> bytes:
    """Read the shared cluster key material from ``path`` (a private file: anyone who can read
    it can forge every message of the cluster)."""
    material = read_private_file(path, "cluster key", 4097)
    if len(material) < MIN_KEY_BYTES:
        raise WireError(
            f"cluster key file {os.fspath(path)!r}: key must be at least {MIN_KEY_BYTES} bytes"
        )
    if len(material) > 4096:
        raise WireError(f"cluster key file {os.fspath(path)!r}: key longer than 4096 bytes")
    return material


class Codec:
    """Encodes and decodes messages for one cluster key (or none) and one size limit."""

    def __init__(self, cluster_key: bytes | None = None, max_size: int = DEFAULT_MAX_FRAME):
        if cluster_key is not None and len(cluster_key) < MIN_KEY_BYTES:
            raise WireError(f"cluster key must be at least {MIN_KEY_BYTES} bytes")
        self.max_size = max_size
        self._mac_key = (
            blake3.blake3(cluster_key, derive_key_context=KEY_CONTEXT).digest()
            if cluster_key is not None
            else None
        )
        self._header = bytes([MAGIC, FLAG_MAC if self._mac_key else 0])

    @property
    def authenticated(self) -> bool:
        """True when this codec signs and requires a cluster-key MAC."""
        return self._mac_key is not None

    def _parts(self, type: str, body: dict[str, Any]) -> list[bytes]:
        payload = cbor2.dumps([PROTOCOL_VERSION, type, body])
        if self._mac_key is None:
            parts = [self._header, payload]
        else:
            mac = blake3.blake3(self._header, key=self._mac_key)
            mac.update(payload)
            parts = [self._header, mac.digest(), payload]
        size = sum(map(len, parts))
        if size > self.max_size:
            raise WireError(f"{type}: message of {size} bytes exceeds the limit of {self.max_size}")
        return parts

    def encode(self, type: str, body: dict[str, Any]) -> bytes:
        """One whole message, e.g. a datagram payload."""
        return b"".join(self._parts(type, body))

    def frame(self, type: str, body: dict[str, Any]) -> bytes:
        """One length-prefixed message for a stream."""
        parts = self._parts(type, body)
        return b"".join([LENGTH_PREFIX.pack(sum(map(len, parts))), *parts])

    def decode(self, data: bytes | bytearray | memoryview) -> Message:
        """Check and decode one whole message; raises WireError and nothing else."""
        view = memoryview(data)
        if len(view) > self.max_size:
            raise WireError(f"message of {len(view)} bytes exceeds the limit of {self.max_size}")
        if len(view) < 3:
            raise WireError("message too short")
        if view[0] != MAGIC:
            raise WireError("not a quorumfs message (bad magic byte)")
        flags = view[1]
        if flags & ~FLAG_MAC:
            raise WireError(f"unknown header flags {flags:#04x}")
        if flags & FLAG_MAC:
            if self._mac_key is None:
                raise WireError("message is authenticated but this peer has no cluster key")
            if len(view) < 2 + MAC_SIZE + 1:
                raise WireError("message too short for its MAC")
            mac = blake3.blake3(view[:2], key=self._mac_key)
            mac.update(view[2 + MAC_SIZE :])
            if not hmac.compare_digest(mac.digest(), view[2 : 2 + MAC_SIZE]):
                raise WireError("bad MAC: wrong cluster key or corrupted message")
            payload = view[2 + MAC_SIZE :]
        else:
            if self._mac_key is not None:
                raise WireError("message is not authenticated but this peer requires a cluster key")
            payload = view[2:]
        return _decode_payload(payload)

    def hello(self) -> bytes:
        """The frame a client opens a stream with: small, and authenticated like every frame."""
        return self.frame(HELLO, {})

    def frame_decoder(self, first_frame_max: int | None = None) -> FrameDecoder:
        """A fresh incremental decoder for one stream (see FrameDecoder)."""
        return FrameDecoder(self, first_frame_max)


def _decode_payload(payload: memoryview) -> Message:
    try:
        decoded = loads(payload, max_depth=MAX_NESTING)
    except BadCBOR as e:
        raise WireError(str(e)) from None
    if not isinstance(decoded, list) or len(decoded) != 3:
        raise WireError("message must be a [version, type, body] array")
    version, type, body = decoded
    if isinstance(version, bool) or not isinstance(version, int):
        raise WireError("protocol version must be an integer")
    if version != PROTOCOL_VERSION:
        raise WireError(
            f"unsupported protocol version {version} (this peer speaks {PROTOCOL_VERSION})"
        )
    if not isinstance(type, str) or not TYPE_PATTERN.fullmatch(type):
        raise WireError(f"message type {excerpt(type)} is not a valid type name")
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise WireError(f"{type}: body must be a map with string keys")
    return Message(type, body)


class FrameDecoder:
    """Incremental decoder for a stream of length-prefixed frames.

    With ``first_frame_max`` a frame longer than that is refused until one frame has decoded
    (and so, with a cluster key, authenticated); after that the codec's maximum applies.
    ``hello`` frames are consumed here and never returned. After it raises WireError the stream
    is out of sync and every later ``feed`` raises too.
    """

    def __init__(self, codec: Codec, first_frame_max: int | None = None) -> None:
        self._codec = codec
        self._limit = codec.max_size if first_frame_max is None else first_frame_max
        self._buffer = bytearray()
        self._error: WireError | None = None
        self.verified = first_frame_max is None

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return every message they complete."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        messages: list[Message] = []
        offset = 0
        buffer = self._buffer
        try:
            while len(buffer) - offset >= LENGTH_PREFIX.size:
                (size,) = LENGTH_PREFIX.unpack_from(buffer, offset)
                if size > self._limit:
                    first = "" if self.verified else " before the connection is authenticated"
                    raise WireError(
                        f"frame of {size} bytes exceeds the limit of {self._limit}{first}"
                    )
                end = offset + LENGTH_PREFIX.size + size
                if len(buffer) < end:
                    break
                with memoryview(buffer) as view:
                    message = self._codec.decode(view[offset + LENGTH_PREFIX.size : end])
                offset = end
                if not self.verified:
                    self.verified = True
                    self._limit = self._codec.max_size
                if message.type != HELLO:
                    messages.append(message)
        except WireError as e:
            self._error = e
            self._buffer = bytearray()
            raise
        if offset:
            del buffer[:offset]
        return messages

    @property
    def buffered(self) -> int:
        """Bytes received but not yet forming a whole frame."""
        return len(self._buffer)
