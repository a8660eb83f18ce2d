"""Version contexts from clients (the X-Qfs-Version header, ?version=): any text is a clock or
a ValueError with a short message, decided in bounded time."""

from __future__ import annotations

import base64

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.versions import MAX_CONTEXT_COUNTER, MAX_VERSION_TEXT, decode_version, encode_version
from storage.vclock import MAX_ENTRIES, VectorClock
from tests.hostile_cbor import cpu_of, hostile_bytes, mutated, plain_values


def as_text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20), st.integers(1, MAX_CONTEXT_COUNTER), max_size=8
    )
)
def test_contexts_round_trip(entries: dict) -> None:
    clock = VectorClock(entries)
    assert decode_version(encode_version(clock)) == clock


@settings(deadline=None, max_examples=60)
@given(hostile_bytes)
def test_bombs_are_refused_cheaply_with_a_short_message(data: bytes) -> None:
    text = as_text(data)[:MAX_VERSION_TEXT]
    with pytest.raises(ValueError) as caught:
        decode_version(text)
    assert len(str(caught.value)) < 200
    assert cpu_of(lambda: decode_version(text)) < 0.05


@settings(deadline=None)
@given(st.text(max_size=200) | st.builds(as_text, st.binary(max_size=200) | mutated()))
def test_any_text_is_a_clock_or_a_value_error(text: str) -> None:
    try:
        decode_version(text)
    except ValueError as e:
        assert len(str(e)) < 200


@given(plain_values)
def test_decoded_values_that_are_not_clocks_are_named_briefly(value) -> None:
    try:
        decode_version(as_text(cbor2.dumps(value)))
    except ValueError as e:
        assert len(str(e)) < 200


def test_too_many_entries_and_nested_values_are_refused() -> None:
    many = {f"n{i}": 1 for i in range(MAX_ENTRIES + 1)}
    with pytest.raises(ValueError, match="more than"):
        decode_version(as_text(cbor2.dumps(many)))
    with pytest.raises(ValueError, match="deeper than 1"):
        decode_version(as_text(cbor2.dumps({"n": [1]})))
