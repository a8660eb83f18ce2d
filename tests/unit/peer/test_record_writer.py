"""The record writer thread: batches, outcomes back on the reactor's side, a clean stop."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from peer.record_writer import RecordWriter
from storage.records import RecordCorrupt, RecordStore, Sibling
from storage.vclock import VectorClock


class Turns:
    """Stands in for reactor.callLater(0, f): `end_turn` runs what was scheduled."""

    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def __call__(self, f: Callable[[], None]) -> None:
        self.scheduled.append(f)

    def end_turn(self) -> None:
        scheduled, self.scheduled = self.scheduled, []
        for f in scheduled:
            f()


class Mailbox:
    """Stands in for reactor.callFromThread: the calls wait until the test delivers them."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._arrived = threading.Condition()

    def __call__(self, f: Callable[..., Any], *args: Any) -> None:
        with self._arrived:
            self._calls.append((f, args))
            self._arrived.notify_all()

    def deliver(self, count: int = 1) -> int:
        """Run the calls made so far, after waiting for at least `count`; how many ran."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self._calls) >= count, timeout=10)
            calls, self._calls = self._calls, []
        for f, args in calls:
            f(*args)
        return len(calls)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[RecordStore]:
    store = RecordStore(tmp_path / "records.sqlite")
    yield store
    store.close()


def outcome(deferred: defer.Deferred) -> Any:  # type: ignore[type-arg]
    box: list[Any] = []
    deferred.addBoth(box.append)
    assert box, "not fired"
    return box[0]


def test_writes_land_and_results_arrive_through_the_reactor(records: RecordStore) -> None:
    mailbox, turns = Mailbox(), Turns()
    writer = RecordWriter(records, turns, mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    done = writer.put_many([("k", sibling)])
    other = writer.put_many([("j", sibling)])
    assert len(turns.scheduled) == 1  # one hand-over per reactor turn
    assert records.get("k") == []  # nothing goes to the thread before the turn ends
    turns.end_turn()
    mailbox.deliver()
    assert outcome(other) == [[sibling]]
    assert outcome(done) == [[sibling]]
    assert records.get("k") == [sibling]
    writer.stop()


def test_queued_writes_share_a_commit_and_one_failure_stays_its_own(
    records: RecordStore, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "records.sqlite") as db:
        db.execute("INSERT INTO records (key, siblings) VALUES ('bad', x'ffff')")
    mailbox = Mailbox()
    gate = threading.Lock()
    gate.acquire()
    original = records.put_groups
    batches: list[int] = []

    entered = threading.Event()

    def gated(groups: list[Any]) -> list[Any]:
        entered.set()
        with gate:  # hold the first commit until everything is queued
            batches.append(len(groups))
            return original(groups)

    records.put_groups = gated  # type: ignore[method-assign]
    turns = Turns()
    writer = RecordWriter(records, turns, mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    first = writer.put_many([("first", sibling)])
    turns.end_turn()
    assert entered.wait(10)
    writes = [writer.put_many([(f"k{i}", sibling)]) for i in range(3)]
    turns.end_turn()
    writes += [writer.put_many([(f"k{i}", sibling)]) for i in range(3, 5)]
    failing = writer.put_many([("bad", sibling)])
    turns.end_turn()
    gate.release()
    while not all(d.called for d in [first, *writes, failing]):
        mailbox.deliver()
    assert outcome(first) == [[sibling]]
    assert [outcome(w) for w in writes] == [[[sibling]]] * 5
    failure = outcome(failing)
    assert isinstance(failure, Failure) and failure.check(RecordCorrupt)
    # The first write commits alone; the two later turns' writes queued behind it share one.
    assert batches == [1, 6]
    writer.stop()


def test_stop_commits_what_is_queued_first(records: RecordStore) -> None:
    mailbox = Mailbox()
    writer = RecordWriter(records, Turns(), mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    pending = [writer.put_many([(f"k{i}", sibling)]) for i in range(20)]
    writer.stop()  # before the turn ends: stop hands them over itself
    while not all(p.called for p in pending):
        mailbox.deliver()
    assert records.count() == 20


def test_a_closed_store_fails_the_writes(records: RecordStore) -> None:
    mailbox, turns = Mailbox(), Turns()
    writer = RecordWriter(records, turns, mailbox)
    records.close()
    failed = writer.put_many([("k", Sibling(VectorClock({"a": 1}), b"v"))])
    turns.end_turn()
    mailbox.deliver()
    failure = outcome(failed)
    assert isinstance(failure, Failure) and failure.check(ValueError)
    writer.stop()
