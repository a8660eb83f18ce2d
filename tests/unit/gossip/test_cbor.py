"""The bounded decoder: the accepted subset round-trips; everything else, including
value-sharing bombs and deep nesting, raises BadCBOR cheaply and says what was wrong."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.cbor import BadCBOR, check, excerpt, loads
from tests.hostile_cbor import (
    cpu_of,
    hostile_bytes,
    mutated,
    nesting_bombs,
    plain_values,
    sharing_bomb,
    sharing_bombs,
    tagged_values,
)


@given(plain_values)
def test_the_accepted_subset_round_trips(value) -> None:
    assert loads(cbor2.dumps(value)) == value


@settings(deadline=None, max_examples=60)
@given(hostile_bytes)
def test_bombs_nesting_and_tags_are_refused_cheaply(data: bytes) -> None:
    with pytest.raises(BadCBOR):
        loads(data)
    assert cpu_of(lambda: loads(data)) < 0.05


@given(sharing_bombs)
def test_value_sharing_is_refused_by_name(data: bytes) -> None:
    with pytest.raises(BadCBOR, match="tags are not accepted"):
        loads(data)


@given(nesting_bombs)
def test_deep_nesting_is_refused_by_name(data: bytes) -> None:
    with pytest.raises(BadCBOR, match=r"deeper than|indefinite|tags"):
        loads(data)


@given(tagged_values)
def test_every_tag_is_refused(data: bytes) -> None:
    with pytest.raises(BadCBOR, match=r"tag \d+"):
        loads(data)


@settings(deadline=None)
@given(st.binary(max_size=400) | mutated())
def test_garbage_only_raises_bad_cbor_and_agrees_with_cbor2(data: bytes) -> None:
    try:
        value = loads(data)
    except BadCBOR as e:
        assert len(str(e)) < 200
        return
    assert value == cbor2.loads(data)  # what passes is exactly what cbor2 reads


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"\x82\x01", "longer than the input"),
        (b"\x5a\xff\xff\xff\xff", "longer than the input"),
        (b"\xbb" + b"\xff" * 8, "longer than the input"),
        (b"\x01\x02", "trailing"),
        (b"\xa1\x01\x02", "keys must be text"),
        (b"\xf7", "simple value"),
        (b"\x1c", "reserved"),
        (b"\x9f\xff", "indefinite"),
        (cbor2.dumps({"a": 1})[:-1] + b"\x61a\x01", None),
    ],
)
def test_what_is_wrong_is_named(data: bytes, reason: str | None) -> None:
    with pytest.raises(BadCBOR, match=reason):
        loads(data)


def test_limits_are_the_caller_s() -> None:
    check(b"\x81\x81\x00", max_depth=2)
    with pytest.raises(BadCBOR, match="deeper than 1"):
        check(b"\x81\x81\x00", max_depth=1)
    with pytest.raises(BadCBOR, match="more than 3 CBOR items"):
        check(cbor2.dumps([1, 2, 3]), max_items=3)


def test_a_bomb_that_once_cost_seconds_costs_nothing() -> None:
    data = sharing_bomb(30, wrap=lambda v: {"n": v})
    assert len(data) < 250
    assert cpu_of(lambda: loads(data)) < 0.01


def test_excerpt_is_short_escaped_and_never_walks_containers() -> None:
    assert excerpt("\x1b[2J" + "a" * 100) == "'\\x1b[2J" + "a" * 28 + "'..."
    assert excerpt(b"\x00" * 100).startswith("b'\\x00")
    assert excerpt([[0] * 10] * 10) == "a list"
    assert excerpt(2**64) == "18446744073709551616"
