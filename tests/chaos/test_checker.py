"""The checker's rules on small hand-made histories (no peers involved)."""

from __future__ import annotations

from types import SimpleNamespace

from peer.client.api_client import QfsError
from tests.chaos import runner
from tests.chaos.checker import check, check_logs, check_space
from tests.chaos.history import (
    ABSENT,
    INDETERMINATE,
    NOOP,
    OK,
    READ,
    Op,
    classify_failure,
    expected_failure,
)

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


def settled(h: Ops, at: float, *final: str) -> list[str]:
    """The violations of a history whose reads from `at` on came after the cluster settled."""
    return [str(v["violation"]) for v in check(h.ops, {KEY: frozenset(final)}, settled_at=at)]


def test_a_settled_read_of_an_older_version_is_stale() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.put("b", 2, 3)
    h.add("get", 3.5, 3.6, READ, seen=frozenset({"a"}))  # before settling: allowed
    assert settled(h, 10, "b") == []
    h.add("get", 11, 12, READ, seen=frozenset({"a"}))
    h.add("get", 12, 13, READ, seen=frozenset({"a"}))
    violations = check(h.ops, {KEY: frozenset({"b"})}, settled_at=10)
    assert [v["violation"] for v in violations] == ["stale read after settling"]
    assert violations[0]["reads"] == 2
    shown = [op["value"] for op in violations[0]["history"]]  # the history around the read
    assert shown[:2] == ["a", "b"]


def test_a_settled_read_of_only_an_older_unacknowledged_write_is_stale() -> None:
    h = Ops()
    h.put("x", 1, 1.5, INDETERMINATE, status=503)  # may surface, but not instead of b
    h.put("b", 2, 3)
    h.add("get", 11, 12, READ, seen=frozenset({"x", "b"}))
    assert settled(h, 10, "b", "x") == []
    h.add("get", 12, 13, READ, seen=frozenset({"x"}))
    assert settled(h, 10, "b", "x") == ["stale read after settling"]


def test_a_deleted_file_that_comes_back_after_settling() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.rm(2, 3)
    h.add("get", 11, 12, READ, seen=frozenset({ABSENT}))
    assert settled(h, 10, ABSENT) == []
    h.add("get", 20, 21, READ, seen=frozenset({"a"}))  # a zombie, after a tombstone purge
    assert settled(h, 10, ABSENT) == ["deleted file came back"]


def test_an_acknowledged_write_unreadable_after_settling() -> None:
    h = Ops()
    h.put("a", 0, 1)
    h.add("get", 11, 12, READ, seen=frozenset({ABSENT}))
    assert settled(h, 10, "a") == ["acknowledged write unreadable after settling"]


def test_stored_blocks_beyond_the_live_files_need_are_space_not_reclaimed() -> None:
    mib = 1 << 20
    assert check_space({"p1": 10 * mib, "p2": 10 * mib, "p3": 10 * mib}, 10 * mib, 3) == []
    assert check_space({"p1": 0, "p2": 0, "p3": 0}, 0, 3) == []
    [leak] = check_space({"p1": 40 * mib, "p2": 10 * mib, "p3": 10 * mib}, 10 * mib, 3)
    assert leak["violation"] == "space not reclaimed" and leak["peers_over"] == ["p1"]
    assert check_space({"p1": 12 * mib, "p2": 12 * mib, "p3": 12 * mib, "p4": 12 * mib},
                       10 * mib, 3)  # fmt: skip


LOG_START = "2026-12-01 09:24:59,678 p1 INFO peer.node: peer p1 up: gossip/rpc 10.213.0.11:7000\n"
HANDLED = (
    "2026-12-01 09:25:01,001 p1 WARNING peer.node: anti-entropy round failed: Traceback (most"
    ' recent call last):\n  File "x.py", line 1, in f\npeer.rpc.RpcError: timeout\n'
)


def test_unhandled_errors_in_a_peer_log_are_flagged() -> None:
    assert check_logs({"p1": LOG_START + HANDLED + LOG_START}) == []
    deferred = "Unhandled error in Deferred:\n\nTraceback (most recent call last):\nFailure: x\n"
    crashed = "Exception in thread w:\nTraceback (most recent call last):\nKeyError: 'k'\n"
    error = "2026-12-01 09:25:02,002 p1 ERROR peer.rpc: RPC handler block.put failed\n"
    error += 'Traceback (most recent call last):\n  File "r.py", line 9\nOSError: [Errno 28]\n'
    for bad in (deferred, crashed, error, HANDLED + deferred):
        [violation] = check_logs({"p1": LOG_START + bad + LOG_START, "p2": LOG_START})
        assert violation["violation"] == "peer logged an unhandled error"
        assert violation["peer"] == "p1" and violation["count"] == 1, violation
        assert violation["first"] == bad.removeprefix(HANDLED).rstrip("\n")


def test_a_full_disk_answer_is_an_unacknowledged_write_not_a_surprise() -> None:
    full = QfsError(507, "insufficient_storage", "block ...: no space")
    put = Op(0, "c", "p1", "put", KEY, 0)
    classify_failure(put, full)
    assert put.outcome == INDETERMINATE and expected_failure(full, "put")
    assert not expected_failure(full, "get")  # a read never needs space


def test_the_steady_watch_flags_timers_that_stop_not_slow_rounds() -> None:
    """A peer whose anti-entropy timer keeps firing is not stalled, however long its rounds
    take (found on a loaded machine: one exchange with a slow peer took 13 s); one whose timer
    stops for STALL_AFTER seconds is."""
    now = [1000.0]
    watch = runner._SteadyWatch(SimpleNamespace(clocks={}, injected=[]), clock=lambda: now[0])
    for tick in range(40):  # a tick every second, rounds finished or not
        watch._stalled("p1", tick)
        now[0] += 1.0
    assert watch.violations == []
    for _ in range(int(runner.STALL_AFTER) + 2):  # the timer stops
        watch._stalled("p1", 40)
        now[0] += 1.0
    assert [v["violation"] for v in watch.violations] == ["background jobs stalled"]
    assert watch.violations[0]["peer"] == "p1"
