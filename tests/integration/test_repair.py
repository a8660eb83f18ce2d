"""Re-replication, hand-over, scrubbing and garbage collection with real peers (N=3)."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import httpx

from peer.manifest import manifest_key
from storage.datadir import DataDir
from tests.support import LocalCluster, running_cluster, wait_for

FAST_REPAIR = [
    "--anti-entropy-interval", "0.3",
    "--dead-after", "2",
    "--block-size", "64KiB",
]  # fmt: skip


def write_files(client, count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"/r/{i}": rng.randbytes(rng.choice([300, 150_000])) for i in range(count)}
    for path, data in files.items():
        client.put(path, data)
    return files


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def copies_on_disk(cluster: LocalCluster, files: dict[str, bytes]) -> tuple[dict, dict]:
    """Freeze every running peer at once (SIGKILL: a graceful leave would start re-replicating
    the leaver's share onto the others) and count, in each data directory, who holds what."""
    alive = [p.name for p in cluster.peers if p.running()]
    for name in alive:
        cluster.peer(name).signal(signal.SIGKILL)
    for name in alive:
        cluster.peer(name).process.wait(10)
    records: dict[str, list[str]] = {path: [] for path in files}
    blocks: dict[str, list[str]] = {}
    for name in alive:
        with DataDir(cluster.root / name) as datadir:
            for path in files:
                if any(s.value for s in datadir.records.get(manifest_key(path))):
                    records[path].append(name)
            for block in datadir.blocks.hashes():
                datadir.blocks.get(block)  # verifies
                blocks.setdefault(block, []).append(name)
    return records, blocks


def test_a_dead_peer_is_re_replicated_and_a_joining_peer_gets_its_share(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 5, extra=FAST_REPAIR) as cluster:
        with cluster.client("p1") as client:
            files = write_files(client, 24, seed=1)
            referenced = {b["hash"] for path in files for b in client.stat(path)["blocks"]}
        cluster.kill("p5")
        started = time.monotonic()

        def three_live_copies() -> bool:
            with cluster.client("p2") as client:
                for path in files:
                    stat = client.stat(path)
                    live = [r for r in stat["replicas"] if r != "p5"]
                    if len(live) < 3 or any(len(b["holders"]) < 3 for b in stat["blocks"]):
                        return False
            return True

        wait_for(three_live_copies, 60, "3 live copies of every block after p5 died")
        restored = time.monotonic() - started
        cluster.add("p6")
        wait_for(
            lambda: all(
                metric(p.http_url, "qfs_under_replicated") == 0
                for p in cluster.peers
                if p.running()
            ),
            60,
            "no under-replicated items",
        )
        live = [p.http_url for p in cluster.peers if p.running()]
        record_keys = 2 * len(files) + 1  # manifests, their entries, and the entry of /r
        # ... and each peer's own bookkeeping record (peer.repair.horizon), never replicated
        expected = (3 * len(referenced), 3 * record_keys + len(live))
        settled = []  # the totals must hold for three polls in a row (several rounds)

        def handed_over() -> bool:
            totals = tuple(
                sum(metric(url, name) for url in live) for name in ("qfs_blocks", "qfs_records")
            )
            settled.append(totals == expected)
            return settled[-3:] == [True] * 3

        wait_for(handed_over, 60, "exactly three copies of everything after hand-over", poll=0.7)
        with cluster.client("p6") as client:
            for path, data in files.items():
                assert client.get_bytes(path) == data
        records, blocks = copies_on_disk(cluster, files)
    assert restored < 30, restored
    assert {p: h for p, h in records.items() if len(h) != 3} == {}
    assert "p6" in {name for holders in records.values() for name in holders}
    for block in referenced:
        assert len(blocks[block]) == 3, (block, blocks[block])


def test_scrubber_repairs_a_corrupted_block_file(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 3, extra=FAST_REPAIR) as cluster, cluster.client() as client:
        data = os.urandom(200_000)
        client.put("/rot", data)
        block = client.stat("/rot")["blocks"][0]["hash"]
        path = cluster.root / "p2" / "blocks" / block[:2] / block
        path.chmod(0o644)
        damaged = bytearray(path.read_bytes())
        damaged[100] ^= 0xFF
        path.write_bytes(bytes(damaged))
        url = cluster.peer("p2").http_url
        wait_for(lambda: metric(url, "qfs_scrub_repaired_total") >= 1, 40, "scrub repair")
        assert metric(url, "qfs_scrub_corrupt_total") >= 1
        assert path.read_bytes() != bytes(damaged)
        with cluster.client("p2") as reader:
            assert reader.get_bytes("/rot") == data


def test_gc_collects_deleted_files_blocks_but_not_shared_ones(tmp_path: Path) -> None:
    extra = [*FAST_REPAIR, "--gc-interval", "0.5", "--gc-grace", "1"]
    with running_cluster(tmp_path, 3, extra=extra) as cluster, cluster.client() as client:
        shared = os.urandom(64 * 1024)
        client.put("/keep", shared + os.urandom(64 * 1024))
        client.put("/drop", shared + os.urandom(64 * 1024))
        urls = [p.http_url for p in cluster.peers]
        before = 9 * 64 * 1024  # three distinct blocks, three copies each
        wait_for(
            lambda: sum(metric(url, "qfs_block_bytes") for url in urls) == before,
            30,
            "three copies of every block",
        )
        client.rm("/drop")
        wait_for(
            lambda: sum(metric(url, "qfs_block_bytes") for url in urls) <= before - 3 * 64 * 1024,
            30,
            "blocks of /drop collected on all three peers",
        )
        time.sleep(2)  # more collection rounds: nothing else may go
        assert sum(metric(url, "qfs_block_bytes") for url in urls) == before - 3 * 64 * 1024
        assert client.get_bytes("/keep")[: len(shared)] == shared


def test_an_idle_converged_cluster_exchanges_only_digests(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 3, extra=FAST_REPAIR) as cluster, cluster.client() as client:
        write_files(client, 10, seed=3)
        time.sleep(2)  # let the first rounds settle anything in flight
        urls = [p.http_url for p in cluster.peers]
        moved = [metric(url, "qfs_repair_bytes_moved_total") for url in urls]
        digests = [metric(url, "qfs_antientropy_digest_bytes_total") for url in urls]
        started = time.monotonic()
        time.sleep(3)
        elapsed = time.monotonic() - started
        assert [metric(url, "qfs_repair_bytes_moved_total") for url in urls] == moved
        growth = sum(metric(url, "qfs_antientropy_digest_bytes_total") for url in urls) - sum(
            digests
        )
        assert growth > 0
        per_hour = growth / elapsed * 3600
        print(f"idle anti-entropy traffic at 0.3 s rounds: {per_hour / 1e6:.1f} MB/hour")
