"""Repair that never resurrects, strands or leaks, with real `qfs peer` processes (issue 15).

Each test reproduces a failure of the earlier design (commit 0bc7664) through the public
surface only: HTTP reads and writes, signals, data directories and /metrics.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peer.client import launcher
from peer.client.api_client import QfsError
from tests.support import LocalCluster, running_cluster, wait_for

FAST = [
    "--anti-entropy-interval", "0.3",
    "--dead-after", "2",
    "--gc-interval", "0.5",
    "--gc-grace", "0",
    "--block-size", "64KiB",
]  # fmt: skip


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def repair(url: str) -> dict:
    return httpx.get(url + "/v1/cluster", timeout=5).json()["repair"]


def collector_state(url: str) -> str:
    """What a peer's collector did last, for a failure message."""
    state = repair(url)
    return (
        f"{url}: {state['gc_rounds']} rounds, {state['peers_forgotten']} forgotten, last skip "
        f"{state['gc_last_skip']!r}"
    )


def live_urls(cluster: LocalCluster) -> list[str]:
    return [p.http_url for p in cluster.peers if p.running()]


def write(cluster: LocalCluster, count: int, seed: int, via: str = "p1") -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"/f/{i}": rng.randbytes(rng.choice([2000, 150_000])) for i in range(count)}
    with cluster.client(via) as client:
        for path, data in files.items():
            client.put(path, data)
    return files


def absent_everywhere(cluster: LocalCluster, paths: list[str]) -> bool:
    for peer in cluster.peers:
        if not peer.running():
            continue
        with cluster.client(peer.name) as client:
            for path in paths:
                try:
                    client.get_bytes(path)
                    return False
                except QfsError as e:
                    if e.status != 404:
                        return False
    return True


def fully_replicated(cluster: LocalCluster, files: dict[str, bytes], via: str = "p1") -> bool:
    """Every block of every file has 3 holders."""
    with cluster.client(via) as client:
        for path in files:
            stat = client.stat(path)
            if any(len(b["holders"]) < 3 for b in stat["blocks"]):
                return False
    return True


def settled(check, polls: int = 4, pause: float = 0.5) -> bool:
    """`check` holds now and for `polls` more polls (several repair rounds)."""
    for _ in range(polls):
        if not check():
            return False
        time.sleep(pause)
    return True


@pytest.mark.parametrize("how", ["sigterm", "sigkill-past-dead-after"])
def test_a_file_deleted_while_a_peer_was_away_stays_deleted(tmp_path: Path, how: str) -> None:
    """Before: the others purged the tombstones without the peer that was away; when it came
    back, anti-entropy copied every deleted file back, byte for byte."""
    with running_cluster(tmp_path, 3, extra=FAST) as cluster:
        files = write(cluster, 6, seed=1)
        wait_for(lambda: fully_replicated(cluster, files), 30, "3 copies of every block")
        if how == "sigterm":
            cluster.kill("p3", signal.SIGTERM)  # a graceful leave, as for an upgrade
        else:
            cluster.kill("p3")
            cluster.wait_state("p1", "p3", "dead")
            time.sleep(3)  # past --dead-after: p3 is off the ring
        with cluster.client("p1") as client:
            for path in files:
                client.rm(path)
        wait_for(lambda: "p3" in repair(cluster.peer("p1").http_url)["gc_last_skip"], 10, "skip")
        cluster.restart("p3")
        wait_for(
            lambda: all(metric(url, "qfs_block_bytes") == 0 for url in live_urls(cluster)),
            40,
            "every deleted file's blocks collected on every peer",
        )
        assert settled(lambda: absent_everywhere(cluster, list(files)))


def test_a_peer_away_past_the_horizon_is_rebuilt_and_brings_nothing_back(tmp_path: Path) -> None:
    extra = [*FAST, "--horizon", "4"]
    with running_cluster(tmp_path, 3, extra=extra) as cluster:
        files = write(cluster, 6, seed=2)
        kept = {f"/kept/{i}": random.Random(i).randbytes(150_000) for i in range(2)}
        with cluster.client("p2") as client:
            for path, data in kept.items():
                client.put(path, data)
        wait_for(lambda: fully_replicated(cluster, {**files, **kept}), 30, "3 copies")
        cluster.kill("p3")
        live = [cluster.peer(name).http_url for name in ("p1", "p2")]
        wait_for(  # each peer forgets on its own clock
            lambda: all(repair(u)["peers_forgotten"] >= 1 for u in live),
            30,
            "p3 forgotten past the horizon by p1 and p2",
        )
        with cluster.client("p1") as client:
            for path in files:
                client.rm(path)
        wait_for(  # by whichever peer runs the rounds: one that swept leaves them to it
            lambda: sum(repair(u)["gc_tombstones_purged"] for u in live) > 0,
            30,
            lambda: "tombstones purged (collectors: "
            + "; ".join(collector_state(u) for u in live)
            + ")",
        )
        cluster.restart("p3")
        p3 = cluster.peer("p3").http_url
        wait_for(lambda: repair(p3)["rejoin"]["phase"] == "ready", 30, "p3 rebuilt and filled")
        assert repair(p3)["rejoin"]["rebuilds"] == 1
        assert "swept without it" in repair(p3)["rejoin"]["last_rebuild"]
        assert settled(lambda: absent_everywhere(cluster, list(files)))
        with cluster.client("p3") as client:
            for path, data in kept.items():
                assert client.get_bytes(path) == data


def test_garbage_collection_reclaims_with_peers_out_of_phase(tmp_path: Path) -> None:
    """Before: with peers started 1.1 s apart, deleting every file took stored block bytes only
    from 18.9 MB to 12.6 MB in 120 s: each peer collected alone and anti-entropy brought blocks
    back from the peers that had not collected yet."""
    extra = ["--anti-entropy-interval", "0.3", "--gc-interval", "3", "--gc-grace", "1"]
    cluster = LocalCluster(tmp_path, 3, extra=[*extra, "--block-size", "64KiB"])
    try:
        for peer in cluster.peers:
            launcher.start(peer, log_dir=tmp_path / "logs")
            time.sleep(1.1)
        launcher.wait_converged(cluster.peers, 30)
        files = write(cluster, 24, seed=4)
        wait_for(lambda: fully_replicated(cluster, files), 30, "3 copies of every block")
        urls = live_urls(cluster)
        peak = sum(metric(url, "qfs_block_bytes") for url in urls)
        with cluster.client("p2") as client:
            for path in files:
                client.rm(path)
        wait_for(
            lambda: sum(metric(url, "qfs_block_bytes") for url in urls) < 0.15 * peak,
            30,
            f"stored block bytes under 15% of the peak ({peak:.0f})",
        )
    finally:
        cluster.stop()


def paced(data: bytes, seconds: float) -> Iterator[bytes]:
    piece = 256 * 1024
    pause = seconds / (len(data) / piece)
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        time.sleep(pause)


def test_an_upload_longer_than_the_grace_reads_back_whole(tmp_path: Path) -> None:
    """Before: a 24 MiB upload paced over 12 s with --gc-grace 2 was acknowledged (201) and
    then read as 503: its first blocks were collected before its manifest referenced them."""
    extra = [*FAST, "--gc-interval", "0.3"]
    with running_cluster(tmp_path, 3, extra=extra) as cluster:
        data = random.Random(5).randbytes(24 * 1024 * 1024)
        url = cluster.peer("p1").http_url

        def rounds() -> int:  # any peer may run a round for all: count them everywhere
            return sum(repair(u)["gc_rounds"] for u in live_urls(cluster))

        before = rounds()
        reply = httpx.put(url + "/v1/files/big", content=paced(data, 6.0), timeout=60)
        assert reply.status_code == 201, reply.text
        assert rounds() > before + 5  # collection ran while it streamed
        with cluster.client("p2") as client:
            assert client.get_bytes("/big") == data
        done = rounds()
        wait_for(lambda: rounds() >= done + 3, 10, "three more collection rounds")
        with cluster.client("p3") as client:
            assert client.get_bytes("/big") == data


def test_growing_3_to_5_while_an_old_home_is_stale_serves_the_newest(tmp_path: Path) -> None:
    """Before: 35 of 40 keys read the old version on every peer 120 s after the new homes
    converged on the stale one; an R=2 read answered by two empty joiners returned 404."""
    extra = ["--anti-entropy-interval", "30", "--dead-after", "60", "--gc-interval", "1"]
    with running_cluster(tmp_path, 3, extra=extra) as cluster:
        keys = [f"/k/{i}" for i in range(40)]
        with cluster.client("p1") as client:
            for key in keys:
                client.put(key, b"old " + key.encode())
        cluster.kill("p1")
        cluster.wait_state("p2", "p1", "dead")
        with cluster.client("p2") as client:
            for key in keys:
                client.put(key, b"new " + key.encode())
        cluster.restart("p1")  # stale for every key; anti-entropy is 30 s away
        cluster.add("p4")
        cluster.add("p5")
        for peer in ("p1", "p2", "p3", "p4", "p5"):
            with cluster.client(peer) as client:
                for key in keys:
                    assert client.get_bytes(key) == b"new " + key.encode(), (peer, key)
        for name in ("p4", "p5"):
            url = cluster.peer(name).http_url
            wait_for(lambda u=url: repair(u)["rejoin"]["phase"] == "ready", 30, f"{name} ready")
        for peer in ("p4", "p5", "p1"):
            with cluster.client(peer) as client:
                for key in keys:
                    assert client.get_bytes(key, r=3) == b"new " + key.encode(), (peer, key)


def test_shrinking_5_to_3_by_graceful_leaves_keeps_n_copies(tmp_path: Path) -> None:
    """Before: a leaving peer handed nothing over; anti-entropy remade the copies later, and
    meanwhile a read answered by two new homes of a key said 404 (seen in CI)."""
    no_repair = [*FAST, "--anti-entropy-interval", "600"]  # only the hand-over makes copies
    with running_cluster(tmp_path, 5, extra=no_repair) as cluster:
        files = write(cluster, 16, seed=6)
        cluster.kill("p5", signal.SIGTERM)  # each waits for the peer to exit
        cluster.kill("p4", signal.SIGTERM)
        # each leaver handed its share over before it went: no wait for anti-entropy
        assert fully_replicated(cluster, files)
        with cluster.client("p2") as client:
            for path, data in files.items():
                stat = client.stat(path)
                assert set(stat["replicas"]) <= {"p1", "p2", "p3"}, stat["replicas"]
                assert client.get_bytes(path) == data


def test_a_peer_whose_disk_was_replaced_rejoins_and_its_hints_are_resolved(tmp_path: Path) -> None:
    """Before: hints for a node id that never returns stayed pending forever (and one pending
    hint anywhere disabled every tombstone purge)."""
    extra = [*FAST, "--dead-after", "60"]  # p4 stays on the ring: its share gets hints
    with running_cluster(tmp_path, 4, extra=extra) as cluster:
        cluster.kill("p4")
        cluster.wait_state("p1", "p4", "dead")
        files = write(cluster, 20, seed=7)
        urls = live_urls(cluster)
        assert sum(metric(url, "qfs_hints_pending") for url in urls) > 0
        shutil.rmtree(tmp_path / "p4")  # a new disk: a new node id under the same name
        cluster.restart("p4")
        urls = live_urls(cluster)
        wait_for(
            lambda: sum(metric(url, "qfs_hints_pending") for url in urls) == 0,
            30,
            "every hint delivered or re-homed",
        )
        wait_for(lambda: fully_replicated(cluster, files, via="p4"), 30, "3 copies")
        with cluster.client("p4") as client:
            for path, data in files.items():
                assert client.get_bytes(path) == data
        with cluster.client("p1") as client:
            for path in files:
                client.rm(path)
        wait_for(
            lambda: all(metric(url, "qfs_block_bytes") == 0 for url in urls),
            30,
            "purges go on once the old node id is gone",
        )


def test_peers_restarting_around_each_other_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """Found in review: a peer restarted before it had saved whom it knew ran a collection round
    alone at start-up; the others then took their data for stale and rebuilt, losing a write
    only they held."""
    with running_cluster(tmp_path, 3) as cluster:
        cluster.kill("p3")
        with cluster.client("p1") as client:
            client.put("/v", b"acknowledged")
        cluster.restart("p3")
        cluster.kill("p1")
        cluster.kill("p2")
        time.sleep(2)
        cluster.restart("p1")
        cluster.restart("p2")
        for name in ("p1", "p2", "p3"):
            assert repair(cluster.peer(name).http_url)["rejoin"]["rebuilds"] == 0, name
            with cluster.client(name) as client:
                assert client.get_bytes("/v") == b"acknowledged", name
