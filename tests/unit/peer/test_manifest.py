"""Manifests, directory entries and version contexts: round trips and garbage rejected."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.manifest import (
    DIRECTORY,
    FILE,
    Block,
    Entry,
    Manifest,
    entry_key,
    entry_name,
    entry_prefix,
)
from peer.versions import decode_version, encode_version
from storage.vclock import VectorClock
from tests.hostile_cbor import cpu_of, hostile_bytes, mutated, plain_values

MANIFEST_FIELDS = [
    "size", "mtime", "mode", "blake3", "blocks", "inline", "owner", "group", "writer",
    "content_clock", "attrs_clock", "type", "moving_from",
]  # fmt: skip


def test_manifest_round_trip_blocks_and_inline() -> None:
    blocks = Manifest(10, 1.5, 0o640, "h" * 64, (Block("a" * 64, 4), Block("b" * 64, 6)))
    assert Manifest.decode(blocks.encode()) == blocks
    inline = Manifest(3, 2.0, 0o600, "h" * 64, inline=b"abc", owner="u", group="g", writer="p1")
    assert Manifest.decode(inline.encode()) == inline


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"size": 1}),
        cbor2.dumps(
            {"size": 5, "mtime": 0, "mode": 0, "blake3": "x", "blocks": [], "inline": b"abc"}
        ),
        cbor2.dumps({"size": "x", "mtime": 0, "mode": 0, "blake3": "x", "blocks": []}),
    ],
)
def test_malformed_manifests_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="malformed manifest"):
        Manifest.decode(data)


def test_entries_and_their_keys() -> None:
    assert Entry.decode(Entry(FILE, 3, 1.0).encode()) == Entry(FILE, 3, 1.0)
    assert Entry.decode(Entry(DIRECTORY).encode()).type == DIRECTORY
    with pytest.raises(ValueError, match="directory entry"):
        Entry.decode(cbor2.dumps({"type": "symlink"}))
    key = entry_key("/a/b.txt")
    assert key.startswith(entry_prefix("/a"))
    assert entry_name(key) == "b.txt"
    assert not entry_key("/ab/c").startswith(entry_prefix("/a"))


def test_version_text_round_trip_and_garbage() -> None:
    clock = VectorClock({"node-a": 3, "node-b": 1})
    assert decode_version(encode_version(clock)) == clock
    for bad in ["", "!!!", "a" * 5000, "aGVsbG8"]:
        with pytest.raises(ValueError, match="version context"):
            decode_version(bad)


@settings(deadline=None, max_examples=60)
@given(hostile_bytes | mutated())
def test_hostile_manifest_and_entry_bytes_are_value_errors_cheaply(data: bytes) -> None:
    for decode in (Manifest.decode, Entry.decode):
        try:
            decode(data)
        except ValueError as e:
            assert len(str(e)) < 200
        assert cpu_of(lambda decode=decode: decode(data)) < 0.05


@given(st.dictionaries(st.sampled_from(MANIFEST_FIELDS), plain_values, max_size=12))
def test_maps_of_any_field_values_are_manifests_or_short_value_errors(fields: dict) -> None:
    data = cbor2.dumps(fields)
    for decode in (Manifest.decode, Entry.decode):
        try:
            decode(data)
        except ValueError as e:
            assert len(str(e)) < 200


def test_fields_are_type_checked_not_coerced() -> None:
    good = {"size": 1, "mtime": 0.5, "mode": 0o644, "blake3": "h", "blocks": [["b", 1]]}
    assert Manifest.decode(cbor2.dumps(good)).size == 1
    for name, bad in [("size", "1"), ("size", True), ("mode", 1.0), ("blake3", [1]),
                      ("blocks", [["b", "1"]]), ("owner", ["x" * 10_000])]:
        with pytest.raises(ValueError, match=name.rstrip("s")) as caught:
            Manifest.decode(cbor2.dumps({**good, name: bad}))
        assert len(str(caught.value)) < 200
