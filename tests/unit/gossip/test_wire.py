"""The wire codec: round-trips, authentication, framing, and garbage only ever raising WireError."""

import contextlib
import random
import struct

import blake3
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.wire import (
    DEFAULT_MAX_FRAME,
    FIRST_FRAME_MAX,
    HELLO,
    KEY_CONTEXT,
    MAX_DATAGRAM,
    PROTOCOL_VERSION,
    TYPE_PATTERN,
    Codec,
    Message,
    WireError,
    load_cluster_key,
)
from tests.hostile_cbor import cpu_of, hostile_bytes, plain_values

KEY = b"k" * 32
OTHER_KEY = b"o" * 32

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=12), cbor_values, max_size=6)
types = st.from_regex(TYPE_PATTERN, fullmatch=True).filter(lambda t: t != HELLO)
codecs = st.sampled_from([Codec(), Codec(KEY)])


@given(codec=codecs, type_=types, body=bodies)
def test_encode_decode_round_trip(codec: Codec, type_: str, body: dict) -> None:
    assert codec.decode(codec.encode(type_, body)) == Message(type_, body)


@given(codec=codecs, messages=st.lists(st.tuples(types, bodies), max_size=5), data=st.data())
def test_frames_round_trip_whatever_the_chunking(codec, messages, data) -> None:
    stream = b"".join(codec.frame(t, b) for t, b in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = codec.frame_decoder()
    got = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    assert got == [Message(t, b) for t, b in messages]
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(codec=codecs, garbage=st.binary(max_size=300))
def test_random_garbage_only_raises_wire_error(codec: Codec, garbage: bytes) -> None:
    with contextlib.suppress(WireError):
        codec.decode(garbage)
    with contextlib.suppress(WireError):
        codec.frame_decoder().feed(garbage)


@settings(max_examples=200)
@given(codec=codecs, body=bodies, data=st.data())
def test_flipped_bits_and_truncation_only_raise_wire_error(codec, body, data) -> None:
    encoded = bytearray(codec.encode("ping", body))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(WireError):
        codec.decode(bytes(encoded))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(WireError):
        codec.decode(codec.encode("ping", body)[:cut])


def test_any_flipped_bit_is_caught_by_the_mac() -> None:
    codec = Codec(KEY)
    encoded = codec.encode("block.put", {"data": b"x" * 100, "hash": "ab" * 32})
    rng = random.Random(7)
    for _ in range(200):
        damaged = bytearray(encoded)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        with pytest.raises(WireError):
            codec.decode(bytes(damaged))


def test_wrong_key_and_missing_key_are_rejected_both_ways() -> None:
    signed = Codec(KEY).encode("ping", {"seq": 1})
    plain = Codec().encode("ping", {"seq": 1})
    with pytest.raises(WireError, match="bad MAC"):
        Codec(OTHER_KEY).decode(signed)
    with pytest.raises(WireError, match="no cluster key"):
        Codec().decode(signed)
    with pytest.raises(WireError, match="requires a cluster key"):
        Codec(KEY).decode(plain)


def test_unknown_version_is_rejected_with_its_number() -> None:
    data = b"Q\x00" + cbor2.dumps([PROTOCOL_VERSION + 1, "ping", {}])
    with pytest.raises(WireError, match=f"unsupported protocol version {PROTOCOL_VERSION + 1}"):
        Codec().decode(data)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([PROTOCOL_VERSION, "ping"], "array"),
        ({"type": "ping"}, "array"),
        ([True, "ping", {}], "version must be an integer"),
        ([PROTOCOL_VERSION, "", {}], "not a valid type name"),
        ([PROTOCOL_VERSION, 5, {}], "not a valid type name"),
        ([PROTOCOL_VERSION, "pi\x1b[2Jng", {}], r"'pi\\x1b\[2Jng' is not a valid type name"),
        ([PROTOCOL_VERSION, "ping", []], "map with string keys"),
        ([PROTOCOL_VERSION, "ping", {1: 2}], "map keys must be text strings"),
    ],
)
def test_wrong_shapes_are_named(payload, reason) -> None:
    with pytest.raises(WireError, match=reason):
        Codec().decode(b"Q\x00" + cbor2.dumps(payload))


def test_trailing_bytes_tags_and_bad_header_are_rejected() -> None:
    good = Codec().encode("ping", {})
    with pytest.raises(WireError, match="trailing"):
        Codec().decode(good + b"\x00")
    tagged = b"Q\x00" + cbor2.dumps([PROTOCOL_VERSION, "ping", {"t": cbor2.CBORTag(4242, 1)}])
    with pytest.raises(WireError, match="tag 4242"):
        Codec().decode(tagged)
    with pytest.raises(WireError, match="magic"):
        Codec().decode(b"X" + good[1:])
    with pytest.raises(WireError, match="flags"):
        Codec().decode(b"Q\x80" + good[2:])


def test_deep_nesting_is_rejected_not_a_recursion_error() -> None:
    deep = b"\x81" * 10_000 + b"\x00"
    with pytest.raises(WireError):
        Codec().decode(b"Q\x00" + deep)


def test_oversized_messages_rejected_on_both_sides() -> None:
    small = Codec(max_size=1000)
    with pytest.raises(WireError, match="exceeds the limit"):
        small.encode("block.put", {"data": b"x" * 2000})
    with pytest.raises(WireError, match="exceeds the limit"):
        small.decode(Codec().encode("block.put", {"data": b"x" * 2000}))


def test_frame_decoder_rejects_oversized_length_before_buffering_and_stays_broken() -> None:
    decoder = Codec(max_size=1000).frame_decoder()
    with pytest.raises(WireError, match="frame of 4294967295 bytes"):
        decoder.feed(struct.pack(">I", 2**32 - 1))
    assert decoder.buffered == 0
    with pytest.raises(WireError):
        decoder.feed(Codec().frame("ping", {}))


def test_a_large_block_frame_fits_the_default_limit() -> None:
    codec = Codec(KEY)
    data = bytes(range(256)) * 4096 * 16  # 16 MiB
    frame = codec.frame("block.put", {"data": data})
    assert len(frame) < DEFAULT_MAX_FRAME
    (message,) = codec.frame_decoder().feed(frame)
    assert message.body["data"] == data


def test_a_typical_gossip_datagram_fits_the_bound() -> None:
    body = {"from": "p1", "seq": 2**31, "updates": [{"name": f"peer-{i}"} for i in range(20)]}
    assert len(Codec(KEY).encode("ping", body)) <= MAX_DATAGRAM


def test_field_checks_types_and_names_the_problem() -> None:
    message = Message("ping", {"seq": 3, "flag": True, "name": "p1"})
    assert message.field("seq", int) == 3
    assert message.field("missing", int, default=None) is None
    with pytest.raises(WireError, match="ping: missing field 'nope'"):
        message.field("nope", str)
    with pytest.raises(WireError, match="'flag' must be int, got bool"):
        message.field("flag", int)
    with pytest.raises(WireError, match="'name' must be int, got str"):
        message.field("name", int)


def test_cluster_key_file(tmp_path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  " + KEY + b"\n")
    path.chmod(0o640)
    with pytest.raises(WireError, match=r"permissions 0640 are too open.*chmod 600"):
        load_cluster_key(path)
    path.chmod(0o600)
    assert load_cluster_key(path) == KEY
    path.write_bytes(b"short")
    with pytest.raises(WireError, match="at least 16 bytes"):
        load_cluster_key(path)
    with pytest.raises(WireError, match="missing"):
        load_cluster_key(tmp_path / "missing")


def test_a_server_decoder_holds_the_first_frame_small_until_it_is_verified() -> None:
    codec = Codec(KEY)
    big = codec.frame("block.put", {"data": b"x" * FIRST_FRAME_MAX})
    with pytest.raises(WireError, match="before the connection is authenticated"):
        codec.frame_decoder(FIRST_FRAME_MAX).feed(big[:4])
    decoder = codec.frame_decoder(FIRST_FRAME_MAX)
    assert decoder.feed(codec.hello()) == []  # consumed, never handed on
    assert decoder.verified
    assert [m.type for m in decoder.feed(big)] == ["block.put"]


def test_a_forged_hello_does_not_open_the_connection() -> None:
    decoder = Codec(KEY).frame_decoder(FIRST_FRAME_MAX)
    with pytest.raises(WireError, match="bad MAC"):
        decoder.feed(Codec(OTHER_KEY).hello())
    assert not decoder.verified


@settings(deadline=None, max_examples=60)
@given(payload=hostile_bytes, codec=codecs)
def test_bombs_in_datagrams_and_frames_are_refused_cheaply(payload: bytes, codec: Codec) -> None:
    message = codec_seal(codec, payload)
    frame = struct.pack(">I", len(message)) + message
    with pytest.raises(WireError):
        codec.decode(message)
    with pytest.raises(WireError):
        codec.frame_decoder().feed(frame)
    assert cpu_of(lambda: codec.decode(message)) < 0.05
    assert cpu_of(lambda: codec.frame_decoder(FIRST_FRAME_MAX).feed(frame)) < 0.05


@given(codec=codecs, body=plain_values)
def test_errors_quote_no_more_than_a_short_prefix(codec: Codec, body) -> None:
    message = codec_seal(codec, cbor2.dumps([PROTOCOL_VERSION, "x" * 30 + "\x1b", body]))
    try:
        codec.decode(message)
    except WireError as e:
        assert len(e.reason) < 200 and "\x1b" not in e.reason


def codec_seal(codec: Codec, payload: bytes) -> bytes:
    """`payload` (any bytes) inside a valid header and MAC for `codec`: what an insider sends."""
    good = codec.encode("x", {})
    header = good[:2]
    if not codec.authenticated:
        return header + payload
    mac = blake3.blake3(header, key=blake3.blake3(KEY, derive_key_context=KEY_CONTEXT).digest())
    mac.update(payload)
    return header + mac.digest() + payload
