"""Repair benchmark: time to restore N copies after a peer dies for good, time to reclaim the
space of deleted files, and the anti-entropy traffic of an idle, converged cluster.

    python tests/bench/repair.py [--json] [--sizes-mb 100,1024] [--reclaim-mb 1024]
                                 [--idle-seconds 30]

For each size: 5 real peers (N=3, R=2, W=2), that much data written in 4 MiB files, one peer
SIGKILLed for good; the clock runs from the kill until every file's blocks have 3 holders
among the live peers (`/v1/stat`). It includes `--dead-after` (how long the cluster waits
before deciding the peer is gone), printed separately. Idle traffic: digest bytes counted by
every peer's /metrics over `--idle-seconds` on a converged cluster at the default
anti-entropy interval (10 s), scaled to an hour. Reclaim: `--reclaim-mb` written to 3 peers
started 1.1 s apart (`--gc-interval 10 --gc-grace 0`), then every file deleted; the clock runs
from the last delete until no peer stores a block (`qfs_block_bytes` 0 everywhere).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peer.client import launcher
from tests.support import LocalCluster, print_results, wait_for

MiB = 1024 * 1024
FILE_SIZE = 4 * MiB
DEAD_AFTER = 5.0
REPAIR_FLAGS = ["--dead-after", str(DEAD_AFTER), "--anti-entropy-interval", "1"]


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def restore_time(root: Path, megabytes: int) -> dict[str, float]:
    cluster = LocalCluster(root, 5, REPAIR_FLAGS)
    try:
        cluster.start(timeout=120)
        paths = []
        with cluster.client("p1", timeout=600) as client:
            for i in range(max(1, megabytes * MiB // FILE_SIZE)):
                path = f"/bench/{i}"
                client.put(path, os.urandom(FILE_SIZE))
                paths.append(path)
        cluster.kill("p5")
        killed = time.monotonic()

        def restored() -> bool:
            with cluster.client("p2", timeout=60) as client:
                for path in paths:
                    stat = client.stat(path)
                    if any(len([h for h in b["holders"] if h != "p5"]) < 3 for b in stat["blocks"]):
                        return False
            return True

        wait_for(restored, 1800, f"3 live copies of {megabytes} MiB", poll=1.0)
        seconds = time.monotonic() - killed
        moved = sum(
            metric(p.http_url, "qfs_repair_bytes_moved_total") for p in cluster.peers if p.running()
        )
    finally:
        cluster.stop()
    return {
        f"restore_{megabytes}MiB_s": round(seconds, 1),
        f"restore_{megabytes}MiB_after_dead_after_s": round(seconds - DEAD_AFTER, 1),
        f"restore_{megabytes}MiB_moved_MB": round(moved / 1e6, 1),
    }


def reclaim_time(root: Path, megabytes: int) -> dict[str, float]:
    flags = ["--gc-interval", "10", "--gc-grace", "0"]
    cluster = LocalCluster(root, 3, flags)
    try:
        for peer in cluster.peers:  # out of phase, as peers started by hand are
            launcher.start(peer, log_dir=cluster.root / "logs")
            time.sleep(1.1)
        cluster.start(timeout=120)
        paths = []
        with cluster.client("p1", timeout=600) as client:
            for i in range(max(1, megabytes * MiB // FILE_SIZE)):
                path = f"/reclaim/{i}"
                client.put(path, os.urandom(FILE_SIZE))
                paths.append(path)
            urls = [p.http_url for p in cluster.peers]
            peak = sum(metric(u, "qfs_block_bytes") for u in urls)
            for path in paths:
                client.rm(path)
        deleted = time.monotonic()
        wait_for(
            lambda: all(metric(u, "qfs_block_bytes") == 0 for u in urls),
            1800,
            f"the space of {megabytes} MiB reclaimed",
            poll=0.5,
        )
        seconds = time.monotonic() - deleted
    finally:
        cluster.stop()
    return {
        f"reclaim_{megabytes}MiB_peak_stored_MB": round(peak / 1e6, 1),
        f"reclaim_{megabytes}MiB_s": round(seconds, 1),
    }


def idle_traffic(root: Path, seconds: float) -> dict[str, float]:
    cluster = LocalCluster(root, 3)
    try:
        cluster.start(timeout=120)
        with cluster.client("p1") as client:
            for i in range(50):
                client.put(f"/idle/{i}", os.urandom(100_000))
        time.sleep(12)  # one full round at the default interval settles everything
        urls = [p.http_url for p in cluster.peers]
        names = ("qfs_antientropy_digest_bytes_total", "qfs_repair_bytes_moved_total")
        before = {n: sum(metric(u, n) for u in urls) for n in names}
        time.sleep(seconds)
        after = {n: sum(metric(u, n) for u in urls) for n in names}
    finally:
        cluster.stop()
    per_hour = 3600 / seconds
    return {
        "idle_digest_MB_per_hour": round((after[names[0]] - before[names[0]]) * per_hour / 1e6, 2),
        "idle_data_moved_MB_per_hour": round(
            (after[names[1]] - before[names[1]]) * per_hour / 1e6, 2
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sizes-mb", default="100,1024")
    parser.add_argument("--reclaim-mb", type=int, default=1024)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="qfs-repair-") as tmp:
        for megabytes in (int(s) for s in args.sizes_mb.split(",")):
            results.update(restore_time(Path(tmp) / f"r{megabytes}", megabytes))
        results.update(reclaim_time(Path(tmp) / "reclaim", args.reclaim_mb))
        results.update(idle_traffic(Path(tmp) / "idle", args.idle_seconds))
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
