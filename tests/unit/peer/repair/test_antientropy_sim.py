"""Anti-entropy, hand-over, scrubbing and garbage collection on the simulated network."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import pytest
from twisted.internet import defer

from peer.body import FileBody
from peer.coordinator import Coordinator
from peer.manifest import manifest_key
from peer.repair.antientropy import AntiEntropy, placement_of
from peer.repair.collector import GarbageCollector
from peer.repair.digest import BUCKETS, DigestTree, record_digest
from peer.repair.scrubber import Scrubber
from storage.records import Sibling
from storage.vclock import VectorClock
from tests.simnet import SIM_TIME, inline, run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def with_jobs(network, coordinators: dict[str, Coordinator]) -> dict[str, AntiEntropy]:
    """An AntiEntropy per peer, its handlers served on the simulated network."""
    jobs = {}
    for node, coordinator in coordinators.items():
        jobs[node] = AntiEntropy(coordinator, network.replicas[node], inline, lambda: SIM_TIME)
        network.handlers[node] = {**network.replicas[node].handlers(), **jobs[node].handlers()}
    return jobs


def put(coordinator: Coordinator, path: str, data: bytes) -> None:
    run(coordinator.put_file(path, FileBody(io.BytesIO(data))))


def holders_of_record(network, key: str) -> list[str]:
    return sorted(n for n, r in network.replicas.items() if r.records.get(key))


def holders_of_block(network, block: str) -> list[str]:
    return sorted(n for n, r in network.replicas.items() if r.blocks.has(block))


def all_rounds(jobs: dict[str, AntiEntropy], times: int) -> None:
    for _ in range(times):
        for node in sorted(jobs):
            run(jobs[node].run_round())


def test_digests_match_whatever_the_sibling_order() -> None:
    a = Sibling(VectorClock({"x": 1}), b"a")
    b = Sibling(VectorClock({"y": 1}), None)
    assert record_digest("k", [a, b]) == record_digest("k", [b, a])
    assert record_digest("k", [a]) != record_digest("k", [a, b])
    mine = DigestTree.build([("k1", b"1"), ("k2", b"2")])
    theirs = DigestTree.build([("k1", b"1"), ("k2", b"changed")])
    assert len(mine.digests()) == BUCKETS
    differ = mine.differing(theirs.digests())
    assert len(differ) == 1
    assert mine.keys_in(differ) == ["k2"]
    assert mine.differing(mine.digests()) == []


def test_placement_of_record_keys() -> None:
    assert placement_of(manifest_key("/a/b")) == "/a/b"
    assert placement_of("e:/a\0b") == "/a"
    assert placement_of("h:node:f:/a") is None
    assert placement_of("t:abc") == "t:abc"


def test_identical_replicas_exchange_only_digests(cluster) -> None:
    network, coordinators = cluster(3)
    jobs = with_jobs(network, coordinators)
    put(coordinators["n0"], "/same", random.Random(0).randbytes(10_000))
    all_rounds(jobs, 2)
    for job in jobs.values():
        assert job.counters.records_sent == 0
        assert job.counters.bytes_moved == 0
        assert job.counters.digest_bytes > 0


def test_a_replica_that_missed_writes_catches_up(cluster) -> None:
    network, coordinators = cluster(3)
    jobs = with_jobs(network, coordinators)
    network.kill("n2")
    data = random.Random(1).randbytes(3 * 4096 + 5)
    put(coordinators["n0"], "/missed", data)
    network.revive("n2")
    assert network.replicas["n2"].records.get(manifest_key("/missed")) == []
    all_rounds(jobs, 2)
    assert len(network.replicas["n2"].records.get(manifest_key("/missed"))) == 1
    resolved = run(coordinators["n2"].resolve("/missed", None, None))
    for block in resolved.manifest.blocks:
        assert holders_of_block(network, block.hash) == ["n0", "n1", "n2"]
    assert jobs["n2"].counters.records_received + jobs["n0"].counters.records_sent > 0


def test_a_peer_gone_for_good_is_re_replicated_and_a_new_peer_takes_its_share(cluster) -> None:
    network, coordinators = cluster(5, dead_after=10.0)
    rng = random.Random(2)
    files = {f"/f{i}": rng.randbytes(rng.choice([100, 9000])) for i in range(30)}
    for path, data in files.items():
        put(coordinators["n0"], path, data)
    network.kill("n4")
    del network.replicas["n4"]
    del coordinators["n4"]
    del network.handlers["n4"]
    network.states.pop("n4")
    jobs = with_jobs(network, coordinators)
    all_rounds(jobs, 4)
    for path in files:
        assert len(holders_of_record(network, manifest_key(path))) == 3, path
    network.add_peer("n5")
    jobs = with_jobs(network, coordinators)
    all_rounds(jobs, 5)
    blocks = set()
    for path in files:
        assert len(holders_of_record(network, manifest_key(path))) == 3, path
        resolved = run(coordinators["n5"].resolve(path, None, None))
        blocks.update(b.hash for b in resolved.manifest.blocks)
    for block in blocks:
        assert len(holders_of_block(network, block)) == 3
    assert network.replicas["n5"].records.count() > 0
    assert sum(job.counters.handed_over for job in jobs.values()) > 0


def test_scrubber_finds_and_repairs_a_corrupt_block(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/rot", random.Random(3).randbytes(4096 * 2))
    resolved = run(coordinators["n0"].resolve("/rot", None, None))
    victim = resolved.manifest.blocks[0].hash
    store = network.replicas["n1"].blocks
    store.corrupt(victim)
    naps = []

    def nap(seconds: float):
        naps.append(seconds)
        return defer.succeed(None)

    scrubber = Scrubber(coordinators["n1"], store, inline, nap, rate=1024 * 1024)
    run(scrubber.run_pass())
    assert scrubber.counters.corrupt == 1
    assert scrubber.counters.repaired == 1
    assert store.get(victim)  # verified again
    assert victim in store.quarantined()
    assert naps and all(seconds == pytest.approx(4096 / 1024 / 1024) for seconds in naps)


def collectors(network, coordinators, grace: float = 0.0) -> dict[str, GarbageCollector]:
    made = {}
    for node, coordinator in coordinators.items():
        replica = network.replicas[node]
        made[node] = GarbageCollector(
            coordinator, replica, inline, lambda: time.time() + 3600, lambda: 0.0, grace, 3600.0
        )
        run(made[node].load())
        network.handlers[node] = {**replica.handlers(), **made[node].handlers()}
    return made


def test_gc_removes_unreferenced_blocks_keeps_shared_ones_and_purges_tombstones(cluster) -> None:
    network, coordinators = cluster(3)
    shared = random.Random(4).randbytes(4096 * 2)
    own = random.Random(5).randbytes(4096)
    put(coordinators["n0"], "/one", shared + own)
    put(coordinators["n0"], "/two", shared)
    run(coordinators["n1"].delete_file("/one"))
    gcs = collectors(network, coordinators)
    for gc in gcs.values():
        run(gc.run_round())
    two = run(coordinators["n2"].resolve("/two", None, None)).manifest
    assert len(two.blocks) == 2
    for block in two.blocks:
        assert holders_of_block(network, block.hash) == ["n0", "n1", "n2"]
    assert sum(gc.counters.blocks_removed for gc in gcs.values()) == 3
    assert holders_of_record(network, manifest_key("/one")) == []
    assert sum(gc.counters.tombstones_purged for gc in gcs.values()) >= 3


def test_gc_waits_while_a_peer_is_down_and_spares_young_blocks(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/x", random.Random(6).randbytes(4096 * 2))
    run(coordinators["n0"].delete_file("/x"))
    network.kill("n2")
    gcs = collectors(network, coordinators)
    run(gcs["n0"].run_round())
    assert gcs["n0"].counters.skipped == 1
    assert "n2" in gcs["n0"].counters.last_skip_reason
    network.revive("n2")
    young = collectors(network, coordinators, grace=10**10)
    run(young["n0"].run_round())
    assert young["n0"].counters.blocks_removed == 0


def test_a_stopped_scrubber_ends_its_pass_early(cluster) -> None:
    network, coordinators = cluster(3)
    for i in range(3):
        put(coordinators["n0"], f"/s{i}", random.Random(i).randbytes(4096 * 2))
    store = network.replicas["n0"].blocks
    made: list[Scrubber] = []

    def stop_after_first(seconds: float):
        made[0].stop()  # the shutdown arrives while the pass sleeps
        return defer.succeed(None)

    made.append(Scrubber(coordinators["n0"], store, inline, stop_after_first, 1e6))
    scrubber = made[0]
    run(scrubber.run_pass())
    assert scrubber.counters.verified == 1
    assert scrubber.counters.passes == 0
