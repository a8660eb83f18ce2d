"""Regression tests for bugs the chaos suite found, each reduced to its smallest trigger."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gossip.wire import Codec
from peer.client.api_client import Client, Conflict, QfsError
from peer.manifest import manifest_key
from tests.chaos import hostfaults
from tests.chaos.history import ABSENT, digest
from tests.chaos.hostfaults import FakeClock
from tests.chaos.hostile import rpc_call
from tests.support import LocalCluster, running_cluster, wait_for

WRITERS = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path, 3) as running:
        yield running


def _observe(client: Client, path: str, r: int) -> frozenset[str]:
    try:
        return frozenset([digest(client.get_bytes(path, r=r))])
    except Conflict as conflict:
        return frozenset(s["blake3"] for s in conflict.siblings)
    except QfsError as e:
        return frozenset([ABSENT if e.status == 404 else f"<{e}>"])


def test_concurrent_writes_through_one_peer_get_distinct_versions(cluster) -> None:
    """Two puts of one path coordinated by the same peer at the same time read the same
    siblings, so `next_clock` gives both the same clock: two different values under one
    version. Each replica keeps the first it receives (storage: equal clocks are one version),
    so replicas disagree forever, even r=N reads through different peers return different
    values, and one acknowledged write silently vanishes on some replicas. Found by the
    `freeze` scenario (requests queued on a frozen peer all run at SIGCONT)."""
    path = "/race/one-key"
    results: list[dict[str, object]] = []
    start = threading.Barrier(WRITERS)

    def write(i: int) -> None:
        with cluster.client("p1") as client:
            start.wait()
            results.append(client.put(path, f"value {i}".encode()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    versions = [str(r["version"]) for r in results]
    assert len(versions) == WRITERS
    # Every acknowledged write is its own version: either it supersedes the others or it
    # stays as a sibling; never does a different value share its version.
    assert len(set(versions)) == WRITERS, sorted(versions)
    deadline = time.monotonic() + 10
    while True:
        views = {p.name: _observe(cluster.client(p.name), path, r=3) for p in cluster.peers}
        if len(set(views.values())) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(set(views.values())) == 1, views


def test_sigterm_ends_a_peer_promptly_while_it_scrubs(tmp_path: Path) -> None:
    """SIGTERM waits for the scrub pass in progress: TimerService.stopService returns the
    running call's Deferred. 6b4eaef makes the pass stop between blocks, but the paced sleep
    after each block (its size / --scrub-rate: 16 s for 1 MiB at 64 KiB/s) still holds the
    shutdown, and the launcher SIGKILLs a peer still up after 10 s. Found by every chaos
    scenario's final stop ("peer did not exit cleanly on SIGTERM") before 6b4eaef; this is
    what remains. Here: one peer, 3 MiB of blocks, restarted so a pass starts at once."""
    single = ["--replicas", "1", "--read-quorum", "1", "--write-quorum", "1"]
    cluster = LocalCluster(tmp_path, 1, [*single, "--scrub-rate", "64KiB"])
    try:
        cluster.start()
        with cluster.client("p1") as client:
            for i in range(3):
                client.put(f"/scrub/{i}", os.urandom(1 << 20))
        cluster.kill("p1")
        cluster.restart("p1")
        with cluster.client("p1") as client:
            wait_for(client.healthy, 10, "p1 serving again")
        peer = cluster.peer("p1")
        assert peer.process is not None
        started = time.monotonic()
        peer.signal(signal.SIGTERM)
        try:
            code = peer.process.wait(8)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"still running {time.monotonic() - started:.1f}s after SIGTERM"
    finally:
        cluster.stop()


def _stored(cluster: LocalCluster, name: str, key: str) -> list[object]:
    """The siblings peer `name` stores under record `key` (asked over peer RPC)."""
    reply = rpc_call(cluster.ports[name][0], Codec(), "record.get", {"keys": [key]})
    return list(reply.body["result"]["records"][0])


def _wait_dead(cluster: LocalCluster, dead: str) -> None:
    for peer in cluster.peers:
        if peer.name != dead and peer.running():
            cluster.wait_state(peer.name, dead, "dead", timeout=30)


def test_a_purged_tombstone_does_not_let_a_stand_ins_old_copy_come_back(tmp_path: Path) -> None:
    """Garbage collection purges a tombstone once every home holds it and no hints are pending,
    but a stand-in that took a write for a down home keeps its copy after handing it over
    until anti-entropy confirms the homes hold something that descends it; once the homes
    purged the tombstone, nothing ever does. The next time that stand-in stands in (a home is
    down), reads see its old version as current, and read-repair copies it to the homes: a
    deleted file comes back. Found while building the gc-pressure scenario; made deterministic
    here with a slow anti-entropy (the race exists at the default intervals too)."""
    extra = ["--gc-interval", "1", "--anti-entropy-interval", "600", "--probe-interval", "0.5"]
    cluster = LocalCluster(tmp_path, 4, extra)
    path, key = "/tomb/stone", manifest_key("/tomb/stone")
    try:
        cluster.start()
        with cluster.client("p1") as client:
            client.put(path, b"v0")
            homes = list(client.stat(path)["replicas"])
        stand_in = next(p.name for p in cluster.peers if p.name not in homes)
        first, second, third = homes
        cluster.kill(third)
        _wait_dead(cluster, third)
        old = b"v1: taken by the stand-in for the down home"
        with cluster.client(first) as client:
            client.put(path, old)
        wait_for(lambda: _stored(cluster, stand_in, key), 10, "the stand-in holding v1")
        cluster.restart(third)
        wait_for(lambda: _stored(cluster, third, key), 20, "the hint delivered to its home")
        with cluster.client(first) as client:
            client.rm(path)

        def settled() -> bool:
            purged = all(not _stored(cluster, home, key) for home in homes)
            return purged or not _stored(cluster, stand_in, key)

        # Either GC purges the tombstones or the stand-in drops its copy; a fix may do either.
        with_timeout = time.monotonic() + 15
        while not settled() and time.monotonic() < with_timeout:
            time.sleep(0.2)
        cluster.kill(first)
        _wait_dead(cluster, first)
        with cluster.client(second) as client:
            seen = _observe(client, path, r=3)
        assert seen == {ABSENT}, f"deleted, yet reads {seen}; the old v1 is {digest(old)}"
    finally:
        cluster.stop()


def test_a_path_written_again_after_its_tombstone_is_purged_gets_a_new_version(
    tmp_path: Path,
) -> None:
    """`next_clock` counts from the siblings the coordinator reads; once garbage collection
    has purged a path's tombstone there are none, so the next write through the same peer gets
    the very clock the first value had: two different values, one version. A client holding
    the old version then reads (`?version=`) or overwrites (`X-Qfs-Version`) the new value,
    and any surviving copy of the old value is "equal" to the new one, so each replica keeps
    whichever it saw first. Same root cause as the concurrent-writes test above (the counter
    is not the peer's own); found by the gc-pressure scenario with --exclusive-keys."""
    cluster = LocalCluster(tmp_path, 3, ["--gc-interval", "1"])
    path, key = "/again/file", manifest_key("/again/file")
    try:
        cluster.start()
        with cluster.client("p1") as client:
            first = client.put(path, b"first value")["version"]
            client.rm(path)
            names = [p.name for p in cluster.peers]
            wait_for(lambda: not any(_stored(cluster, n, key) for n in names), 20, "the purge")
            second = client.put(path, b"second value")["version"]
        assert second != first
    finally:
        cluster.stop()


def _bad_frames(cluster: LocalCluster, name: str) -> float:
    text = httpx.get(cluster.peer(name).http_url + "/metrics", timeout=5).text
    match = re.search(r"^qfs_rpc_bad_frames_total (\S+)$", text, re.M)
    assert match, "no qfs_rpc_bad_frames_total metric"
    return float(match.group(1))


def test_a_malformed_gossip_stream_message_counts_as_bad_input(tmp_path: Path) -> None:
    """`GossipService.handle_stream_message` raises WireError for a malformed push-pull, as
    documented, but `peer.rpc` handles it like a crash of its own: an ERROR with a traceback
    in the log, not counted in qfs_rpc_bad_frames_total, the connection dropped without an
    error saying why (design.md: bad input gets a clear error). Found by the hostile scenario
    (every peer log had such tracebacks)."""
    with running_cluster(tmp_path, 1) as cluster:
        before = _bad_frames(cluster, "p1")
        port = cluster.ports["p1"][0]
        for body in ({"members": [{"name": ""}]}, {"members": 7}, {}):
            with contextlib.suppress(ConnectionError):
                rpc_call(port, Codec(), "gossip.pushpull", body)
        assert _bad_frames(cluster, "p1") >= before + 3
        assert "Traceback" not in cluster.log("p1")


SCAN_PAUSES = """
from peer.repair.antientropy import let_reactor_run
for _ in range(100):
    let_reactor_run()
print("paused")
"""


@pytest.mark.skipif(not hostfaults.clock_available(), reason="needs libfaketime (faketime)")
def test_a_scan_pauses_under_a_fake_clock(tmp_path: Path) -> None:
    """CI's clock scenario (seed 1): 'RPC handler ae.digest failed', OSError EINVAL from the
    time.sleep with which a scan of more than SCAN_SLICE items lets the reactor run: under
    libfaketime moving the wall clock only, every time.sleep fails (libfaketime#426)."""
    clock = FakeClock(tmp_path / "clock")
    clock.set(-3600)
    done = subprocess.run(
        [*clock.env(), sys.executable, "-c", SCAN_PAUSES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["paused"]
