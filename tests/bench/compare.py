"""Compare the peers of another commit with this tree's, in one run (the machine is too noisy
for figures taken minutes apart to be compared).

    python tests/bench/compare.py BASE [--rounds 6] [--mode c16|big] [--json]

Starts two 3-peer clusters (N=3, R=2, W=2, fsync on) side by side: one runs BASE (any git
revision, checked out in a temporary worktree), the other this working tree. Rounds alternate
between them (ABBA...), each round either 600 4 KiB puts from 16 clients (`c16`) or one 64 MiB
put (`big`). Prints, per cluster, the median over rounds of the rate, the p99 latency (c16),
and the peers' CPU per operation (c16: ms per put; big: ms per MiB) read from /proc.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peer.client import launcher
from peer.client.api_client import Client
from tests.bench.cluster import percentile, timed_ops
from tests.support import LocalCluster, print_results

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SMALL_OPS = 600
BIG_MB = 64


def peers_cpu_s(cluster: LocalCluster) -> float:
    """User + system CPU seconds the cluster's peers have used so far."""
    total = 0
    for peer in cluster.peers:
        fields = Path(f"/proc/{peer.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def one_round(
    cluster: LocalCluster, clients: list[Client], mode: str, tag: str
) -> dict[str, float]:
    """Rate, p99 (c16) and peer CPU per op of one round."""
    if mode == "big":
        data = os.urandom(BIG_MB * MiB)
        before = peers_cpu_s(cluster)
        started = time.perf_counter()
        clients[0].put(f"/compare/{tag}.bin", data)
        elapsed = time.perf_counter() - started
        cpu = peers_cpu_s(cluster) - before
        return {"MBps": BIG_MB * MiB / elapsed / 1e6, "cpu_ms_per_MiB": 1000 * cpu / BIG_MB}
    payload = os.urandom(4096)
    before = peers_cpu_s(cluster)
    rate, latencies = timed_ops(
        clients, SMALL_OPS, lambda c, i: c.put(f"/compare/{tag}/{i}", payload)
    )
    cpu = peers_cpu_s(cluster) - before
    return {
        "ops": rate,
        "p99_ms": percentile(latencies, 0.99),
        "cpu_ms_per_op": 1000 * cpu / SMALL_OPS,
    }


def run(base: str, rounds: int, mode: str, root: Path) -> dict[str, float]:
    worktree = root / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), base],
        check=True,
        capture_output=True,
    )
    clusters = {label: LocalCluster(root / f"{label}-cluster", 3) for label in ("base", "head")}
    try:
        for peer in clusters["base"].peers:
            launcher.start(peer, log_dir=root / "base-cluster" / "logs", cwd=worktree)
        launcher.wait_converged(clusters["base"].peers, 30)
        clusters["head"].start()
        names = ["p1", "p2", "p3"]
        clients = {
            label: [cluster.client(names[i % 3], timeout=600) for i in range(16)]
            for label, cluster in clusters.items()
        }
        samples: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
        for index in range(rounds):
            order = ["base", "head"] if index % 2 == 0 else ["head", "base"]
            for label in order:
                samples[label].append(
                    one_round(clusters[label], clients[label], mode, f"r{index}")
                )
        results: dict[str, float] = {}
        for label, rows in samples.items():
            for name in rows[0]:
                results[f"{label}_{name}"] = round(statistics.median(r[name] for r in rows), 2)
        return results
    finally:
        for cluster in clusters.values():
            cluster.stop()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
            capture_output=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the git revision to compare this tree against")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per cluster")
    parser.add_argument("--mode", choices=["c16", "big"], default="c16")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qfs-compare-") as tmp:
        results = run(args.base, args.rounds, args.mode, Path(tmp))
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
