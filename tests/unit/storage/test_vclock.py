"""Vector clocks: unit tests, algebraic laws (hypothesis) and the pruning safety claim."""

from __future__ import annotations

from contextlib import AbstractContextManager
from unittest import mock

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import vclock
from storage.vclock import MAX_ENTRIES, Ordering, VectorClock, merge_all

NODES = ["a", "b", "c", "d", "e"]
clocks = st.dictionaries(st.sampled_from(NODES), st.integers(0, 4)).map(VectorClock)


def small_bound(limit: int) -> AbstractContextManager[object]:
    """Shrink MAX_ENTRIES so a handful of nodes exercises pruning."""
    return mock.patch.object(vclock, "MAX_ENTRIES", limit)


# --- unit tests ---------------------------------------------------------------------------


def test_empty_and_zeros_dropped() -> None:
    assert VectorClock().entries == {}
    assert VectorClock({"a": 0, "b": 2}).entries == {"b": 2}
    assert VectorClock({"a": 0}) == VectorClock()


def test_entries_view_is_read_only() -> None:
    clock = VectorClock({"a": 1})
    with pytest.raises(TypeError):
        clock.entries["a"] = 5  # type: ignore[index]
    assert clock.entries == {"a": 1}


def test_equality_and_hash_by_entries() -> None:
    one, two = VectorClock({"a": 1, "b": 2}), VectorClock({"b": 2, "a": 1})
    assert one == two
    assert len({one, two, VectorClock({"a": 1})}) == 2
    assert one != {"a": 1, "b": 2}


def test_increment_is_classic_below_the_bound() -> None:
    clock = VectorClock().increment("a").increment("b").increment("a")
    assert clock.entries == {"a": 2, "b": 1}


def test_compare_cases() -> None:
    a1 = VectorClock({"a": 1})
    a1b1 = VectorClock({"a": 1, "b": 1})
    b1 = VectorClock({"b": 1})
    assert a1.compare(a1b1) is Ordering.BEFORE
    assert a1b1.compare(a1) is Ordering.AFTER
    assert a1.compare(VectorClock({"a": 1})) is Ordering.EQUAL
    assert a1.compare(b1) is Ordering.CONCURRENT
    assert a1b1.descends(a1) and a1.descends(a1) and not a1.descends(a1b1)
    assert not a1.descends(b1)


def test_merge_is_pointwise_max() -> None:
    merged = VectorClock({"a": 3, "b": 1}).merge(VectorClock({"b": 2, "c": 1}))
    assert merged.entries == {"a": 3, "b": 2, "c": 1}
    assert merge_all([]) == VectorClock()
    assert merge_all([VectorClock({"a": 1}), VectorClock({"b": 1})]).entries == {"a": 1, "b": 1}


def test_cbor_forms() -> None:
    clock = VectorClock({"b": 2, "a": 1})
    assert clock.to_cbor() == {"a": 1, "b": 2}
    assert VectorClock.from_cbor({"a": 1, "b": 2}) == clock
    assert clock.encode() == VectorClock({"a": 1, "b": 2}).encode()  # canonical
    assert VectorClock.from_cbor(cbor2.loads(clock.encode())) == clock


@pytest.mark.parametrize(
    "entries",
    [
        {"a": -1},
        {"a": "1"},
        {"a": 1.0},
        {"a": True},
        {"a": None},
        {"a": 2**64},
        {1: 1},
        {b"a": 1},
        {"": 1},
        {"x" * 257: 1},
        {"\ud800": 1},
        {f"n{i}": 1 for i in range(MAX_ENTRIES + 1)},
    ],
    ids=repr,
)
def test_bad_entries_rejected(entries: dict) -> None:
    with pytest.raises(ValueError):
        VectorClock(entries)
    with pytest.raises(ValueError):
        VectorClock.from_cbor(entries)


@pytest.mark.parametrize("obj", [[], [["a", 1]], "a", 1, None, b"\xa1aa\x01"], ids=repr)
def test_from_cbor_rejects_non_maps(obj: object) -> None:
    with pytest.raises(ValueError, match="map"):
        VectorClock.from_cbor(obj)


def test_errors_show_only_a_short_escaped_prefix_of_what_came_in() -> None:
    with pytest.raises(ValueError) as caught:
        VectorClock({"\x1b[2J" + "n" * 10_000: "1" * 10_000})
    assert len(str(caught.value)) < 120 and "\x1b" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        VectorClock.from_cbor({("x" * 10_000,): 1})
    assert "tuple" in str(caught.value) and len(str(caught.value)) < 120


def test_from_cbor_refuses_too_many_entries_before_looking_at_them() -> None:
    with pytest.raises(ValueError, match="more than"):
        VectorClock.from_cbor({f"n{i}": 0 for i in range(100_000)})


def test_constructor_rejects_non_mappings() -> None:
    with pytest.raises(ValueError, match="mapping"):
        VectorClock([("a", 1)])  # type: ignore[arg-type]


def test_increment_rejects_bad_node() -> None:
    with pytest.raises(ValueError):
        VectorClock().increment("")
    with pytest.raises(ValueError):
        VectorClock().increment(7)  # type: ignore[arg-type]


def test_increment_overflow_is_an_error() -> None:
    with pytest.raises(ValueError, match="overflow"):
        VectorClock({"a": 2**64 - 1}).increment("a")


def test_full_clock_increment_prunes_smallest_other_entry() -> None:
    full = VectorClock({f"n{i:02d}": i + 1 for i in range(MAX_ENTRIES)})
    bumped = full.increment("new")
    assert len(bumped.entries) == MAX_ENTRIES
    assert "n00" not in bumped.entries  # the smallest counter went
    assert bumped.entries["new"] == MAX_ENTRIES + 1  # above every counter it carries
    assert bumped.compare(full) is Ordering.CONCURRENT  # false sibling, never BEFORE
    again = bumped.increment("n05")
    assert again.entries["n05"] == 7 and again.compare(bumped) is Ordering.AFTER


def test_dropped_own_entry_cannot_let_an_old_version_win() -> None:
    # With two entries allowed: the writer's own counter (n:3) is lost in a merge; a plain
    # n:1 would make the old version {a:10, n:3} dominate the new one.
    with small_bound(2):
        old = VectorClock({"a": 10, "n": 3})
        context = old.merge(VectorClock({"a": 1, "q": 5}))
        assert context.entries == {"a": 10, "q": 5}
        new = context.increment("n")
        assert old.compare(new) is Ordering.BEFORE


def test_merge_tie_break_is_deterministic() -> None:
    with small_bound(2):
        left = VectorClock({"a": 1, "b": 1}).merge(VectorClock({"c": 1}))
        right = VectorClock({"c": 1}).merge(VectorClock({"b": 1, "a": 1}))
    assert left == right == VectorClock({"a": 1, "b": 1})


# --- laws -------------------------------------------------------------------------------


@given(clocks, clocks)
def test_merge_commutative(a: VectorClock, b: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)


@given(clocks, clocks, clocks)
def test_merge_associative(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(clocks)
def test_merge_idempotent(a: VectorClock) -> None:
    assert a.merge(a) == a


@given(clocks, clocks)
def test_merge_is_an_upper_bound(a: VectorClock, b: VectorClock) -> None:
    merged = a.merge(b)
    assert merged.descends(a) and merged.descends(b)


@given(clocks, clocks)
def test_compare_agrees_with_merge(a: VectorClock, b: VectorClock) -> None:
    merged = a.merge(b)
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.BEFORE,
        (False, True): Ordering.AFTER,
        (False, False): Ordering.CONCURRENT,
    }[(merged == b, merged == a)]
    assert a.compare(b) is expected
    assert (a.compare(b) is Ordering.EQUAL) == (a == b)


@given(clocks, clocks)
def test_compare_is_antisymmetric(a: VectorClock, b: VectorClock) -> None:
    mirror = {
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert b.compare(a) is mirror[a.compare(b)]


@given(clocks, st.sampled_from([*NODES, "z"]))
def test_increment_strictly_after(a: VectorClock, node: str) -> None:
    bumped = a.increment(node)
    assert bumped.compare(a) is Ordering.AFTER
    assert a.compare(bumped) is Ordering.BEFORE
    assert bumped.descends(a) and not a.descends(bumped)


@given(clocks)
def test_encode_round_trip(a: VectorClock) -> None:
    assert VectorClock.from_cbor(cbor2.loads(a.encode())) == a
    assert VectorClock.from_cbor(a.to_cbor()) == a
    assert hash(VectorClock.from_cbor(cbor2.loads(a.encode()))) == hash(a)


many_nodes = st.integers(0, 2 * MAX_ENTRIES).map(lambda i: f"node-{i}")


@settings(max_examples=50)
@given(st.lists(st.tuples(st.booleans(), many_nodes, many_nodes), max_size=300))
def test_bound_never_exceeded(ops: list[tuple[bool, str, str]]) -> None:
    left = right = VectorClock()
    for merge, x, y in ops:
        left = left.increment(x)
        right = right.increment(y)
        if merge:
            left = left.merge(right)
        assert len(left.entries) <= MAX_ENTRIES and len(right.entries) <= MAX_ENTRIES
        assert VectorClock.from_cbor(cbor2.loads(left.encode())) == left


pruned_clocks = st.dictionaries(st.sampled_from(NODES), st.integers(0, 4), max_size=3).map(
    VectorClock
)


@given(pruned_clocks, pruned_clocks, pruned_clocks)
def test_merge_laws_hold_when_pruning(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    with small_bound(3):
        assert a.merge(b) == b.merge(a)
        assert a.merge(b).merge(c) == a.merge(b.merge(c))
        assert a.merge(a) == a
        assert len(a.merge(b).merge(c).entries) <= 3


# --- pruning safety on random causal histories ------------------------------------------


def true_order(i: int, j: int, past: list[frozenset[int]]) -> Ordering:
    if i == j:
        return Ordering.EQUAL
    if i in past[j]:
        return Ordering.BEFORE
    if j in past[i]:
        return Ordering.AFTER
    return Ordering.CONCURRENT


def run_history(data: st.DataObject, nodes: list[str]) -> tuple[list[VectorClock], list]:
    """Build versions the way coordinators do: merge a read context, increment our entry.

    A node's context always includes its own previous version (the model in vclock's
    docstring). Returns the clocks and, per version, the set of its true causal ancestors.
    """
    versions: list[VectorClock] = []
    past: list[frozenset[int]] = []
    latest: dict[str, int] = {}
    for _ in range(data.draw(st.integers(1, 30))):
        node = data.draw(st.sampled_from(nodes))
        seen: set[int] = set()
        if versions:
            seen = set(data.draw(st.lists(st.integers(0, len(versions) - 1), max_size=3)))
        if node in latest:
            seen.add(latest[node])
        context = merge_all(versions[i] for i in seen)
        versions.append(context.increment(node))
        past.append(frozenset(seen).union(*(past[i] for i in seen)))
        latest[node] = len(versions) - 1
    return versions, past


@given(st.data())
def test_unpruned_clocks_capture_causality_exactly(data: st.DataObject) -> None:
    versions, past = run_history(data, NODES)
    for i, vi in enumerate(versions):
        for j, vj in enumerate(versions):
            assert vi.compare(vj) is true_order(i, j, past)


@settings(max_examples=300)
@given(st.data())
def test_pruning_only_creates_false_siblings(data: st.DataObject) -> None:
    with small_bound(3):
        versions, past = run_history(data, [f"n{i}" for i in range(7)])
        for i, vi in enumerate(versions):
            assert len(vi.entries) <= 3
            for j, vj in enumerate(versions):
                got, truth = vi.compare(vj), true_order(i, j, past)
                assert got is truth or got is Ordering.CONCURRENT, (i, j, vi, vj, got, truth)


@given(
    st.dictionaries(
        st.text(max_size=300) | st.integers() | st.binary(max_size=8),
        st.integers() | st.text(max_size=300) | st.none() | st.lists(st.integers(), max_size=3),
        max_size=70,
    )
    | st.lists(st.integers(), max_size=3)
)
def test_from_cbor_on_anything_is_a_clock_or_a_short_value_error(obj) -> None:
    try:
        VectorClock.from_cbor(obj)
    except ValueError as e:
        assert len(str(e)) < 200
