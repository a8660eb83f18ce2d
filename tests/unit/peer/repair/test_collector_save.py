"""The collector's horizon state on disk is the last one it saved, also when two saves' writes
run at once in the thread pool (a round's first phase served while gossip changes are saved)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from twisted.internet import defer

from peer.repair.collector import HORIZON_KEY, GarbageCollector
from peer.repair.horizon import HorizonState
from tests.simnet import sim_cluster

WAIT = 10.0  # seconds a gate waits for the other thread: only reached when the test fails


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def in_a_thread(f, *args):  # type: ignore[no-untyped-def]
    """RunInThread on a thread of its own per call, as the reactor's pool may run them."""
    done: defer.Deferred = defer.Deferred()

    def work() -> None:
        try:
            result = f(*args)
        except Exception as e:  # handed to the waiting coroutine
            done.errback(e)
        else:
            done.callback(result)

    threading.Thread(target=work, daemon=True).start()
    return done


def test_of_two_saves_whose_writes_run_at_once_the_later_state_is_kept(cluster) -> None:
    """Before: each write read the stored clock and stored the next one, so two writes at once
    stored the same clock and the store kept whichever came first, here the older state: a
    round this peer had answered was forgotten on its disk, and after a restart the peer looked
    stale to the peers that swept that round."""
    network, coordinators = cluster(3)
    replica = network.replicas["n0"]
    collector = GarbageCollector(
        coordinators["n0"], replica, in_a_thread, time.time, time.monotonic, 0.0, 100.0
    )
    finished = threading.Event()
    outcomes: list[object] = []

    def settle(result: object) -> None:
        outcomes.append(result)
        if len(outcomes) == 2:
            finished.set()

    loaded = threading.Event()
    defer.ensureDeferred(collector.load()).addBoth(lambda _: loaded.set())
    assert loaded.wait(WAIT)

    records = replica.records
    real_put = records.put
    first_in, release_first, first_done, second_in = (threading.Event() for _ in range(4))
    writes: list[object] = []

    def gated_put(key, sibling):  # type: ignore[no-untyped-def]
        if key != HORIZON_KEY:
            return real_put(key, sibling)
        writes.append(sibling)
        if len(writes) == 1:  # the older state: held until the newer one is on its way
            first_in.set()
            assert release_first.wait(WAIT)
            try:
                return real_put(key, sibling)
            finally:
                first_done.set()
        second_in.set()
        assert first_done.wait(WAIT)  # the newer state lands second
        return real_put(key, sibling)

    records.put = gated_put  # type: ignore[method-assign]
    try:
        collector.state.accounted = 1
        defer.ensureDeferred(collector.save()).addBoth(settle)
        assert first_in.wait(WAIT)
        collector.state.accounted = 2  # a round began here while the first save was writing
        defer.ensureDeferred(collector.save()).addBoth(settle)
        assert second_in.wait(WAIT)
        release_first.set()
        assert finished.wait(WAIT)
    finally:
        records.put = real_put  # type: ignore[method-assign]
    assert outcomes == [None, None]
    stored = records.get(HORIZON_KEY)
    assert HorizonState.decode(stored[-1].value).accounted == 2
