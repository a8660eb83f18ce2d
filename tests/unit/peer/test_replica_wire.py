"""Records read from peers: whatever the bounded wire decoder lets through is a list of
siblings or a WireError with a short message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.wire import WireError
from peer.replica import MAX_BLOCK_AGE, MAX_SIBLINGS, block_age, siblings_from_wire
from storage.records import Sibling
from storage.vclock import VectorClock
from tests.hostile_cbor import plain_values

sibling_shaped = st.lists(
    st.tuples(
        st.dictionaries(st.text(max_size=8), plain_values, max_size=4) | plain_values,
        st.none() | st.binary(max_size=16) | plain_values,
    ).map(list),
    max_size=4,
)


@given(plain_values | sibling_shaped)
def test_anything_decoded_is_siblings_or_a_short_wire_error(raw) -> None:
    try:
        siblings = siblings_from_wire(raw)
    except WireError as e:
        assert len(e.reason) < 200
    else:
        assert all(isinstance(s, Sibling) for s in siblings)


def test_siblings_round_trip_and_their_number_is_bounded() -> None:
    assert siblings_from_wire([[{"n": 2}, b"v"], [{"m": 1}, None]]) == [
        Sibling(VectorClock({"n": 2}), b"v"),
        Sibling(VectorClock({"m": 1}), None),
    ]
    with pytest.raises(WireError, match=f"at most {MAX_SIBLINGS}"):
        siblings_from_wire([[{"n": 1}, None]] * (MAX_SIBLINGS + 1))


@given(plain_values)
def test_a_block_age_from_the_wire_is_a_bounded_number_or_a_wire_error(raw) -> None:
    try:
        age = block_age(raw)
    except WireError as e:
        assert "block age" in e.reason
    else:
        assert isinstance(age, float) and 0 <= age <= MAX_BLOCK_AGE


@pytest.mark.parametrize("raw", [-1, float("nan"), float("inf"), MAX_BLOCK_AGE + 1, True, "1"])
def test_block_ages_out_of_range_or_of_another_kind_are_refused(raw) -> None:
    with pytest.raises(WireError, match="block age"):
        block_age(raw)
    assert block_age(0) == 0.0 and block_age(12.5) == 12.5
