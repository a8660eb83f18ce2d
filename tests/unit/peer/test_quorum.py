"""Quorum decisions without I/O: targets, tallies, reconciliation, clocks of new versions."""

import pytest

from peer.quorum import (
    CounterSource,
    QuorumTally,
    Target,
    context_of,
    live,
    missing_siblings,
    next_clock,
    plan_targets,
    reconcile,
)
from storage.records import Sibling
from storage.vclock import VectorClock


def clock(**entries: int) -> VectorClock:
    return VectorClock(entries)


def test_targets_are_up_homes_plus_one_stand_in_per_down_home() -> None:
    preference = ["a", "b", "c", "d", "e"]
    up = {"a", "c", "d", "e"}
    assert plan_targets(preference, up.__contains__, 3) == [
        Target("a"),
        Target("c"),
        Target("d", hint_for="b"),
    ]
    assert plan_targets(preference, {"d"}.__contains__, 3) == [Target("d", hint_for="a")]
    assert plan_targets(preference[:3], {"a"}.__contains__, 3) == [Target("a")]


def test_tally_decides_as_soon_as_the_outcome_is_certain() -> None:
    tally = QuorumTally.over(["a", "b", "c"], required=2)
    tally.succeeded("a", 1)
    assert not tally.met and not tally.impossible
    tally.failed("b", "down")
    assert not tally.met and not tally.impossible
    tally.failed("c", "down")
    assert tally.impossible and tally.complete and not tally.met
    ok = QuorumTally.over(["a", "b", "c"], required=2)
    ok.succeeded("a", 1)
    ok.succeeded("b", 1)
    assert ok.met and not ok.complete


def test_grouped_tally_needs_the_quorum_in_every_group() -> None:
    tally = QuorumTally([frozenset("abc"), frozenset("cde")], required=2)
    tally.succeeded("a", 1)
    tally.succeeded("b", 1)
    assert not tally.met
    tally.succeeded("c", 1)
    assert not tally.met
    tally.failed("d", "down")
    assert not tally.impossible
    tally.failed("e", "down")
    assert tally.impossible and tally.complete


def test_reconcile_keeps_concurrent_and_drops_dominated() -> None:
    old = Sibling(clock(a=1), b"old")
    new = Sibling(clock(a=2), b"new")
    other = Sibling(clock(a=1, b=1), b"other")
    assert reconcile([[old], [new]]) == [new]
    merged = reconcile([[new], [other], [old]])
    assert {s.value for s in merged} == {b"new", b"other"}
    assert reconcile([[new], [new]]) == [new]
    assert reconcile([]) == []


def test_missing_siblings_is_what_read_repair_sends() -> None:
    new = Sibling(clock(a=2), b"new")
    other = Sibling(clock(b=1), b"other")
    assert missing_siblings([Sibling(clock(a=1), b"old")], [new, other]) == [new, other]
    assert missing_siblings([new], [new, other]) == [other]
    assert missing_siblings([new, other], [new, other]) == []


def test_context_and_live() -> None:
    tomb = Sibling(clock(a=3), None)
    value = Sibling(clock(b=1), b"x")
    assert context_of([tomb, value]) == clock(a=3, b=1)
    assert live([tomb, value]) == [value]


def test_next_clock_goes_past_this_nodes_own_latest_write() -> None:
    current = [Sibling(clock(a=5, b=1), b"latest by a")]
    stale_context = clock(a=1, b=1)
    new = next_clock(stale_context, current, "a")
    assert new == clock(a=6, b=1)
    assert new.descends(current[0].clock)
    assert next_clock(VectorClock(), [], "a") == clock(a=1)


def test_counters_never_repeat_even_when_reads_see_nothing_new() -> None:
    now = [100.0]
    source = CounterSource(lambda: now[0])
    first = source.issued(next_clock(VectorClock(), [], "a", source.floor()), "a")
    racing = source.issued(next_clock(VectorClock(), [], "a", source.floor()), "a")
    assert first != racing and racing.descends(first)
    assert first.entries["a"] >= 100_000_000
    restarted = CounterSource(lambda: now[0] + 5)  # same node after a restart, seconds later
    again = next_clock(VectorClock(), [], "a", restarted.floor())
    assert again.entries["a"] > racing.entries["a"]


def test_counters_never_go_back_when_the_wall_clock_steps_back_or_across_a_restart() -> None:
    now = [1_000.0]
    stored: list[int] = []
    source = CounterSource(lambda: now[0], 0, stored.append, chunk=1_000)
    issued = [source.issued(next_clock(VectorClock(), [], "a", source.floor()), "a")]
    assert stored == [issued[0].entries["a"] + 1_000]  # reserved before the counter is used
    now[0] -= 3_600  # the wall clock steps back an hour
    for _ in range(3):
        issued.append(source.issued(next_clock(VectorClock(), [], "a", source.floor()), "a"))
    counters = [clock.entries["a"] for clock in issued]
    assert counters == sorted(set(counters))  # strictly increasing
    assert len(stored) == 1  # the chunk covers them: no write per counter
    restarted = CounterSource(lambda: now[0], stored[-1], stored.append, chunk=1_000)
    after = restarted.issued(next_clock(VectorClock(), [], "a", restarted.floor()), "a")
    assert after.entries["a"] > max(counters)


def test_a_counter_beyond_the_mark_is_not_issued_when_the_mark_cannot_be_stored() -> None:
    def disk_full(mark: int) -> None:
        raise OSError(28, "No space left on device")

    source = CounterSource(lambda: 5.0, 0, disk_full)
    clock = next_clock(VectorClock(), [], "a", source.floor())
    with pytest.raises(OSError):
        source.issued(clock, "a")
    assert source.floor() == clock.entries["a"]  # nothing was recorded as issued
