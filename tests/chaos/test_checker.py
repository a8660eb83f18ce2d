"""The checker's rules on small hand-made histories (no peers involved)."""

from __future__ import annotations

from tests.chaos.checker import check
from tests.chaos.history import ABSENT, INDETERMINATE, NOOP, OK, READ, Op

KEY = "/k"


class Ops:
    """Builds one key's history: put / rm / get with start, end and outcome."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, kind: str, start: float, end: float, outcome: str = OK, **kw: object) -> Op:
        op = Op(len(self.ops), "c", "p1", kind, KEY, start, end, outcome=outcome)
        for name, value in kw.items():
            setattr(op, name, value)
        self.ops.append(op)
        return op

    def put(self, value: str, start: float, end: float, outcome: str = OK, **kw: object) -> Op:
        return self.add("put", start, end, outcome, value=value, **kw)

    def rm(self, start: float, end: float, outcome: str = OK, **kw: object) -> Op:
        return self.add("rm", start, end, outcome, **kw)

    def violations(self, *final: str) -> list[str]:
        return [str(v["violation"]) for v in check(self.ops, {KEY: frozenset(final)})]


def test_the_last_acknowledged_write_must_survive() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.put("b", 2, 3)
    assert h.violations("b") == []
    assert h.violations("a") == ["resurrected overwritten write", "lost acknowledged write"]
    assert h.violations(ABSENT) == ["lost write (final state is absent)", "lost acknowledged write"]


def test_overlapping_writes_may_win_either_way_or_both_stay() -> None:
    h = Ops()
    h.put("a", 0, 2)
    h.put("b", 1, 3)
    assert h.violations("a") == []
    assert h.violations("b") == []
    assert h.violations("a", "b") == []


def test_an_acknowledged_delete_stays_deleted_unless_rewritten() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.rm(2, 3)
    assert h.violations(ABSENT) == []
    assert "resurrected overwritten write" in h.violations("a")
    h.put("b", 4, 5)
    assert h.violations("b") == []
    assert h.violations(ABSENT) == ["lost write (final state is absent)", "lost acknowledged write"]


def test_unacknowledged_writes_may_surface_at_any_time() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.put("x", 2, 3, INDETERMINATE, status=503)
    h.put("b", 4, 5)
    assert h.violations("b") == []
    assert h.violations("b", "x") == []
    # x (a 503, so done reading before b started) cannot have replaced b
    assert h.violations("x") == ["lost acknowledged write"]


def test_a_timed_out_write_may_still_run_and_supersede_a_later_one() -> None:
    h = Ops()
    h.put("late", 0, 1, INDETERMINATE, late=True, error="timeout")
    h.put("b", 4, 5)
    assert h.violations("late") == []


def test_an_unacknowledged_put_may_hide_an_acknowledged_delete() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.put("x", 1.5, 1.8, INDETERMINATE, status=503)
    h.rm(2, 3)
    assert h.violations(ABSENT) == []
    assert h.violations("x") == []
    assert "resurrected overwritten write" in h.violations("a")


def test_no_acknowledged_mutation_allows_absent_and_a_noop_delete_changes_nothing() -> None:
    h = Ops()
    h.rm(0, 1, NOOP, status=404)
    assert h.violations(ABSENT) == []
    assert h.violations("nobody wrote this") == ["phantom value"]


def test_reads_must_return_written_values() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.add("get", 1, 2, READ, seen=frozenset({"a"}))
    h.add("get", 1, 2, READ, seen=frozenset({ABSENT}))
    assert h.violations("a") == []
    h.add("get", 1, 2, READ, seen=frozenset({"a", "forged"}))
    assert h.violations("a") == ["phantom read"]


def test_two_acknowledged_writes_with_one_version_are_a_violation() -> None:
    h = Ops()
    h.put("a", 0, 2, version="v1")
    h.put("b", 1, 3, version="v1")
    assert h.violations("a") == ["two acknowledged writes share one version"]
