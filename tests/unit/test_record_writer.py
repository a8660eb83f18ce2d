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
    mailbox = Mailbox()
    writer = RecordWriter(records, mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    done = writer.put_many([("k", sibling)])
    assert not done.called  # only the reactor side fires it
    mailbox.deliver()
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

    def gated(groups: list[Any]) -> list[Any]:
        with gate:  # hold the first commit until everything is queued
            batches.append(len(groups))
            return original(groups)

    records.put_groups = gated  # type: ignore[method-assign]
    writer = RecordWriter(records, mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    first = writer.put_many([("first", sibling)])
    writes = [writer.put_many([(f"k{i}", sibling)]) for i in range(5)]
    failing = writer.put_many([("bad", sibling)])
    gate.release()
    while not all(d.called for d in [first, *writes, failing]):
        mailbox.deliver()
    assert outcome(first) == [[sibling]]
    assert [outcome(w) for w in writes] == [[[sibling]]] * 5
    failure = outcome(failing)
    assert isinstance(failure, Failure) and failure.check(RecordCorrupt)
    # The first write may commit alone; everything queued behind it goes in one commit.
    assert sum(batches) == 7 and len(batches) <= 2
    writer.stop()


def test_stop_commits_what_is_queued_first(records: RecordStore) -> None:
    mailbox = Mailbox()
    writer = RecordWriter(records, mailbox)
    sibling = Sibling(VectorClock({"a": 1}), b"v")
    pending = [writer.put_many([(f"k{i}", sibling)]) for i in range(20)]
    writer.stop()
    while not all(p.called for p in pending):
        mailbox.deliver()
    assert records.count() == 20


def test_a_closed_store_fails_the_writes(records: RecordStore) -> None:
    mailbox = Mailbox()
    writer = RecordWriter(records, mailbox)
    records.close()
    failed = writer.put_many([("k", Sibling(VectorClock({"a": 1}), b"v"))])
    mailbox.deliver()
    failure = outcome(failed)
    assert isinstance(failure, Failure) and failure.check(ValueError)
    writer.stop()
