"""Sealed gossip datagrams: the AEAD codec, the replay window and the keyring (no reactor)."""

from __future__ import annotations

import pytest

from gossip.crypto import OVERHEAD, DatagramSealer, Keyring, ReplayWindow, key_id, new_key
from gossip.wire import WireError

NOW = 1_800_000_000.0


def pair(keys_a: Keyring, keys_b: Keyring | None = None) -> tuple[DatagramSealer, DatagramSealer]:
    return DatagramSealer(keys_a, "a"), DatagramSealer(keys_b or keys_a, "b")


def test_a_sealed_datagram_opens_with_the_same_key_and_names_its_sender() -> None:
    a, b = pair(Keyring((new_key(),)))
    sealed = a.seal(b"ping body", NOW)
    assert b"ping body" not in sealed
    assert b.open(sealed, NOW + 0.01) == ("a", b"ping body")
    assert len(sealed) - len(b"ping body") <= OVERHEAD


def test_every_message_gets_its_own_nonce_and_sequence() -> None:
    a, _ = pair(Keyring((new_key(),)))
    first, second = a.seal(b"same", NOW), a.seal(b"same", NOW)
    assert first != second
    assert first[-12 - 4 - 16 : -4 - 16] != second[-12 - 4 - 16 : -4 - 16]


def test_a_datagram_without_the_key_or_tampered_with_is_refused() -> None:
    a, b = pair(Keyring((new_key(),)), Keyring((new_key(),)))
    with pytest.raises(WireError, match="key this peer does not hold"):
        b.open(a.seal(b"x", NOW), NOW)
    same_key = DatagramSealer(a.keyring, "c")
    sealed = bytearray(a.seal(b"hello", NOW))
    sealed[-1] ^= 1
    with pytest.raises(WireError, match="authentication"):
        same_key.open(bytes(sealed), NOW)
    sealed = bytearray(a.seal(b"hello", NOW))
    sealed[8] ^= 1  # the sender's name: authenticated as associated data
    with pytest.raises(WireError):
        same_key.open(bytes(sealed), NOW)
    for junk in (b"", b"Q", b"QS\x01", b"\x51\x00plain codec message", b"QS\x09" + bytes(40)):
        with pytest.raises(WireError):
            same_key.open(junk, NOW)


def test_a_replayed_datagram_is_refused_and_a_forged_one_does_not_burn_its_number() -> None:
    a, b = pair(Keyring((new_key(),)))
    sealed = a.seal(b"x", NOW)
    forged = bytearray(sealed)
    forged[-1] ^= 1
    with pytest.raises(WireError):
        b.open(bytes(forged), NOW)
    assert b.open(sealed, NOW) == ("a", b"x")
    with pytest.raises(WireError, match="replayed"):
        b.open(sealed, NOW)


def test_reordered_datagrams_within_the_window_are_accepted_once() -> None:
    a, b = pair(Keyring((new_key(),)))
    sealed = [a.seal(bytes([i]), NOW + i * 0.001) for i in range(5)]
    for i in (4, 0, 2, 1, 3):
        assert b.open(sealed[i], NOW + 0.01)[1] == bytes([i])
    for i in range(5):
        with pytest.raises(WireError):
            b.open(sealed[i], NOW + 0.01)


def test_window_floor_and_horizon() -> None:
    window = ReplayWindow(window=1.0, horizon=60.0, max_remembered=3)
    us = int(NOW * 1e6)
    window.check("a", us, NOW)
    window.accept("a", us)
    window.accept("a", us + 2_000_000)  # two seconds later: the first falls below the floor
    with pytest.raises(WireError, match="stale"):
        window.check("a", us + 500_000, NOW + 2)
    window.check("a", us + 1_500_000, NOW + 2)  # within a second of the highest, unseen
    for i in range(1, 5):  # more than max_remembered: the floor rises to the oldest dropped
        window.accept("a", us + 2_000_000 + i)
    with pytest.raises(WireError):
        window.check("a", us + 2_000_000, NOW + 2)
    with pytest.raises(WireError, match="clock"):
        window.check("b", us - 61_000_000, NOW)
    with pytest.raises(WireError, match="clock"):
        window.check("b", us + 61_000_000, NOW)


def test_sequence_numbers_grow_across_a_restart() -> None:
    keys = Keyring((new_key(),))
    receiver = DatagramSealer(keys, "b")
    old = DatagramSealer(keys, "a").seal(b"before", NOW)
    receiver.open(old, NOW)
    restarted = DatagramSealer(keys, "a")
    assert receiver.open(restarted.seal(b"after", NOW + 1), NOW + 1) == ("a", b"after")


def test_the_replay_window_is_bounded_in_senders() -> None:
    window = ReplayWindow(max_senders=2)
    for sender in ("a", "b", "c"):
        window.accept(sender, 1)
    assert len(window._senders) == 2


def test_keyring_rotation_add_use_remove() -> None:
    old, new = new_key(), new_key()
    ring = Keyring((old,))
    a, b = DatagramSealer(ring, "a"), DatagramSealer(ring, "b")
    # 1. install the new key everywhere: both still seal with the old one and accept both
    a.keyring = b.keyring = ring.add(new)
    assert b.open(a.seal(b"1", NOW), NOW)[1] == b"1"
    # 2. a switches first; b, not switched yet, opens what a seals, and a opens b's
    a.keyring = a.keyring.use(key_id(new).hex())
    assert b.open(a.seal(b"2", NOW + 1), NOW + 1)[1] == b"2"
    assert a.open(b.seal(b"3", NOW + 1), NOW + 1)[1] == b"3"
    b.keyring = b.keyring.use(key_id(new).hex()[:4])
    # 3. the old key is removed: a datagram sealed with it is refused
    a.keyring = b.keyring = b.keyring.remove(key_id(old).hex())
    stale = DatagramSealer(Keyring((old,)), "c")
    with pytest.raises(WireError, match="does not hold"):
        b.open(stale.seal(b"4", NOW + 2), NOW + 2)
    assert a.keyring.ids() == [key_id(new).hex()]


def test_keyring_refusals_and_file_round_trip() -> None:
    one, two = new_key(), new_key()
    ring = Keyring((one, two))
    assert Keyring.loads(ring.dumps()) == ring
    with pytest.raises(ValueError, match="primary"):
        ring.remove(key_id(one).hex())
    with pytest.raises(ValueError, match="already"):
        ring.add(two)
    with pytest.raises(ValueError, match="no key"):
        ring.use("ffffffffff")
    with pytest.raises(ValueError, match="at least one"):
        Keyring(())
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring((b"short",))
    with pytest.raises(ValueError, match="line 2"):
        Keyring.loads("# comment\nnot base64!\n")
