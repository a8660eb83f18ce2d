"""Cluster benchmark: 3 real peers (N=3, R=2, W=2, fsync on) on 127.0.0.1, through the HTTP API.

    python tests/bench/cluster.py [--json] [--big-mb 64] [--small 400] [--move-mb 1024]
                                  [--rounds 3] [--dir DIR] [--tls]

With --tls it measures instead the transfer figures (converge, large put/get, 4 KiB put/get
with one client and 16) of an open (--insecure) cluster and of a secure one (`qfs cluster
init`: HTTPS to clients, mutual TLS between peers, sealed gossip), both running, their rounds
alternating, each started once both clusters are idle. Printed side by side: `<figure>_plain`,
`<figure>_tls` and `<figure>_tls_pct` (TLS as a percentage of plaintext; for latencies and
converge, the TLS figure is simply shown), with the CPU a large put and get cost the peers and
the client per MB (`*_peers_cpu_ms_per_MB`, `*_client_cpu_ms_per_MB`): where encryption's
cost lands.

Prints put/get throughput of a large file (median of `--rounds` files, default 3; the peers'
peak RSS meanwhile), 4 KiB put/get rates one after another and with 16 concurrent clients
(medians of as many rounds),
their p50/p99 latencies, the time for three peers to see each other, idle peer RSS, and,
measured in the same run on the same disk, the raw fsync'd sequential write throughput
(`disk_fsync_MBps`: median of a measurement before the cluster starts and one before each
large put, with min and max, as this disk's speed swings; every byte lands on N disks, here
all one disk) and `durable_blocks_MBps`, the disk doing what the three block stores do per
block without them (1 MiB direct writes, fdatasync, rename, directory fsync, 3 threads).

Namespace figures: `move_<size>_s` moves one large file (a metadata operation: the manifest is
rewritten, no block moves), `move_dir_200_s` moves a directory of 200 files. Token checks: a
second cluster started with --admin-token-file serves the same 4 KiB gets to the admin and to a
user (whose reads also check the directories above), in rounds interleaved with the open
cluster's: `small_get_ops_{open,admin,user}` and `auth_*_get_overhead_pct`.
"""

from __future__ import annotations

import argparse
import mmap
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peer.allocator import CLIENT_BUFFER, keep_buffers_in_heap
from peer.client.api_client import Client
from storage.fsutil import sync_dir
from tests.support import LocalCluster, make_cluster_dir, print_results

MiB = 1024 * 1024


def fresh_file(path: Path, megabytes: int) -> None:
    """Write `megabytes` MiB of random bytes to `path` and fsync it: bytes no store holds yet
    (blocks are content-addressed), whose writeback is not charged to what is timed next (ext4
    fsyncs entangle)."""
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(MiB))
        os.fsync(f.fileno())


def disk_fsync_MBps(directory: Path, megabytes: int = 256) -> float:
    """Sequential 1 MiB writes then one fsync, like `dd conv=fsync`: the disk's ceiling."""
    path = directory / "raw-write"
    block = os.urandom(MiB)
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(megabytes):
            f.write(block)
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return megabytes * MiB / elapsed / 1e6


def durable_blocks_MBps(directory: Path, megabytes: int = 192, writers: int = 3) -> float:
    """What the block stores ask of the disk, without them: `writers` threads (one per replica)
    each writing 1 MiB files with direct I/O, fdatasync, rename and a directory fsync."""
    block = mmap.mmap(-1, MiB)  # page-aligned, as direct I/O wants
    block.write(os.urandom(MiB))
    folders = [directory / f"durable-{i}" for i in range(writers)]
    for folder in folders:
        folder.mkdir()

    def write(index: int) -> None:
        folder = folders[index % writers]
        temp = folder / f"{index}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o444)
        try:
            os.write(fd, block)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, folder / str(index))
        sync_dir(folder)

    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(megabytes)))
    elapsed = time.perf_counter() - started
    for folder in folders:
        shutil.rmtree(folder)
    return megabytes * MiB / elapsed / 1e6


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples the RSS of some processes every 50 ms in a thread; `stop()` gives the peak."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self._peak = max(self._peak, *(rss_mb(pid) for pid in self._pids))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self._peak


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], window: float = 0.5, busy: float = 0.1, limit: float = 20.0) -> None:
    """Wait (up to `limit` seconds) until processes `pids` together use under `busy` of a core
    over `window`: background work a previous step started (anti-entropy, handoff, collection)
    would otherwise be charged to the next one measured."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(cpu_seconds(pid) for pid in pids) - before < busy * window:
            return


class CpuSplit:
    """The CPU seconds the peers and this process (the client) spend from creation to `stop()`:
    where an operation's cost goes, which a throughput figure alone does not say."""

    def __init__(self, peer_pids: list[int]) -> None:
        self._pids = peer_pids
        self._peers = sum(cpu_seconds(pid) for pid in peer_pids)
        self._client = time.process_time()

    def stop(self) -> tuple[float, float]:
        """(peers' CPU seconds, this process's CPU seconds) since creation."""
        peers = sum(cpu_seconds(pid) for pid in self._pids) - self._peers
        return peers, time.process_time() - self._client


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_ops(clients: list[Client], count: int, op) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    """Run `count` ops spread over one thread per client; (ops/s, latencies in ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(index: int, client: Client) -> None:
        mine = []
        try:
            for i in range(index, count, len(clients)):
                started = time.perf_counter()
                op(client, i)
                mine.append((time.perf_counter() - started) * 1000)
        except BaseException as e:  # reported after the run
            errors.append(e)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return count / elapsed, latencies


def namespace_figures(cluster: LocalCluster, root: Path, move_mb: int) -> dict[str, float]:
    """Time a move of one `move_mb` MiB file and of a directory of 200 files."""
    results: dict[str, float] = {}
    client = cluster.client("p1", timeout=600)
    big_path = root / "move.bin"
    fresh_file(big_path, move_mb)
    with open(big_path, "rb") as f:
        client.put("/bench/move/big.bin", f)
    big_path.unlink()
    started = time.perf_counter()
    client.move("/bench/move/big.bin", "/bench/move/moved.bin")
    label = f"{move_mb // 1024}GiB" if move_mb % 1024 == 0 else f"{move_mb}MiB"
    results[f"move_{label}_s"] = round(time.perf_counter() - started, 3)
    payload = os.urandom(4096)
    timed_ops([client], 200, lambda c, i: c.put(f"/bench/tree/f{i:03}", payload))
    started = time.perf_counter()
    client.move("/bench/tree", "/bench/tree-moved")
    results["move_dir_200_s"] = round(time.perf_counter() - started, 3)
    client.close()
    return results


def token_figures(open_cluster: LocalCluster, root: Path, small: int) -> dict[str, float]:
    """4 KiB gets with tokens off (`open_cluster`) and on (a second cluster, as the admin and
    as a user), interleaved in rounds so that load from elsewhere hits all three alike."""
    admin = secrets.token_urlsafe(24)
    token_file = root / "admin.token"
    token_file.write_text(admin)
    token_file.chmod(0o600)  # a token file others may read is refused
    cluster = LocalCluster(
        root / "auth-cluster", 3, extra=["--admin-token-file", str(token_file)], token=admin
    )
    results: dict[str, float] = {}
    try:
        cluster.start()
        time.sleep(1)
        with cluster.client("p1") as client:
            user = client.token_create("bench", ["bench"])["token"]
            payload = os.urandom(4096)
            timed_ops([client], small, lambda c, i: c.put(f"/bench/s0/{i}", payload, mode=0o644))
        time.sleep(3)  # let the new cluster's background work after the writes settle
        readers = {
            "open": open_cluster.client("p1"),
            "admin": cluster.client("p1", token=admin),
            "user": cluster.client("p1", token=user),
        }
        elapsed = dict.fromkeys(readers, 0.0)
        rounds = 10
        for index in range(rounds):
            for label, reader in readers.items():
                names = range(index, small, rounds)
                started = time.perf_counter()
                for i in names:
                    reader.get_bytes(f"/bench/s0/{i}")
                elapsed[label] += time.perf_counter() - started
        for label, reader in readers.items():
            results[f"small_get_ops_{label}"] = round(small / elapsed[label], 1)
            reader.close()
        for label in ("admin", "user"):
            overhead = elapsed[label] / elapsed["open"] - 1
            results[f"auth_{label}_get_overhead_pct"] = round(100 * overhead, 1)
    finally:
        cluster.stop()
    return results


class TransferRounds:
    """One cluster's transfer figures (large put/get, 4 KiB put/get with one client and with
    16), measured a round at a time, so that two clusters' rounds can alternate: load from
    elsewhere on this shared machine then hits both alike. Each large round puts a
    `fresh_file` (written untimed)."""

    def __init__(self, cluster: LocalCluster, big_path: Path, big_mb: int, small: int) -> None:
        self.cluster = cluster
        self.big_path = big_path
        self.big_mb = big_mb
        self.small = small
        self.payload = os.urandom(4096)
        self.client = cluster.client("p1", timeout=600)
        self.reader = cluster.client("p2", timeout=600)
        self.single = [cluster.client("p1")]
        names = ["p1", "p2", "p3"]
        self.many = [cluster.client(names[i % 3]) for i in range(16)]
        self.pids = [peer.pid for peer in cluster.peers]
        self.rates: dict[str, list[float]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.cpu: dict[str, list[tuple[float, float]]] = {"put": [], "get": []}

    def _record(self, figure: str, rate: float, latencies: list[float] | None = None) -> None:
        self.rates.setdefault(figure, []).append(rate)
        self.latencies.setdefault(figure, []).extend(latencies or [])

    def big(self, round_: int) -> None:
        fresh_file(self.big_path, self.big_mb)
        size = self.big_mb * MiB
        with open(self.big_path, "rb") as f:
            split, started = CpuSplit(self.pids), time.perf_counter()
            self.client.put(f"/bench/big{round_}.bin", f)
            self._record("put_MBps", size / (time.perf_counter() - started) / 1e6)
            self.cpu["put"].append(split.stop())
        split, started = CpuSplit(self.pids), time.perf_counter()
        self.reader.get(f"/bench/big{round_}.bin", Discard())
        self._record("get_MBps", size / (time.perf_counter() - started) / 1e6)
        self.cpu["get"].append(split.stop())

    def small_puts(self, round_: int) -> None:
        payload = self.payload
        self._record("small_put_ops", *timed_ops(
            self.single, self.small, lambda c, i: c.put(f"/bench/s{round_}/{i}", payload)
        ))
        self._record("small_put_ops_c16", *timed_ops(
            self.many, self.small * 2, lambda c, i: c.put(f"/bench/c{round_}/{i}", payload)
        ))

    def small_gets(self, round_: int) -> None:
        self._record("small_get_ops", *timed_ops(
            self.single, self.small, lambda c, i: c.get_bytes(f"/bench/s{round_}/{i}")
        ))
        self._record("small_get_ops_c16", *timed_ops(
            self.many, self.small * 2, lambda c, i: c.get_bytes(f"/bench/c{round_}/{i}")
        ))

    def figures(self) -> dict[str, float]:
        """Medians of the rounds' rates, p50/p99 of the 4 KiB latencies, CPU per MB moved."""
        results = {figure: round(statistics.median(got), 1) for figure, got in self.rates.items()}
        for figure, latencies in self.latencies.items():
            if latencies:
                name = figure.removesuffix("_ops").replace("_ops_", "_")
                results[f"{name}_p50_ms"] = round(percentile(latencies, 0.5), 2)
                results[f"{name}_p99_ms"] = round(percentile(latencies, 0.99), 2)
        for op, splits in self.cpu.items():
            if splits:
                megabytes = len(splits) * self.big_mb * MiB / 1e6
                peers, mine = (sum(seconds) for seconds in zip(*splits, strict=True))
                results[f"{op}_peers_cpu_ms_per_MB"] = round(1000 * peers / megabytes, 2)
                results[f"{op}_client_cpu_ms_per_MB"] = round(1000 * mine / megabytes, 2)
        return results

    def close(self) -> None:
        for client in (self.client, self.reader, *self.single, *self.many):
            client.close()


def run(root: Path, big_mb: int, small: int, move_mb: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    disk = [disk_fsync_MBps(root)]
    cluster = LocalCluster(root / "cluster", 3)
    try:
        results["converge_s"] = round(cluster.start(), 3)
        time.sleep(2)
        results["idle_rss_MB_max"] = round(max(rss_mb(p.pid) for p in cluster.peers), 1)
        transfers = TransferRounds(cluster, root / "big.bin", big_mb, small)
        peak = PeakRss(transfers.pids)
        for round_ in range(rounds):  # the machine is noisy: medians of a few rounds
            disk.append(disk_fsync_MBps(root))
            transfers.big(round_)
        results["transfer_peak_rss_MB"] = round(peak.stop(), 1)
        (root / "big.bin").unlink()
        results["disk_fsync_MBps"] = round(statistics.median(disk), 1)
        results["disk_fsync_MBps_min"] = round(min(disk), 1)
        results["disk_fsync_MBps_max"] = round(max(disk), 1)
        results["durable_blocks_MBps"] = round(durable_blocks_MBps(root), 1)
        for step in (TransferRounds.small_puts, TransferRounds.small_gets):
            for round_ in range(rounds):
                step(transfers, round_)
        results.update(transfers.figures())
        results["rss_MB_max"] = round(max(rss_mb(p.pid) for p in cluster.peers), 1)
        transfers.close()
        results.update(namespace_figures(cluster, root, move_mb))
        results.update(token_figures(cluster, root, small))
    finally:
        cluster.stop()
    results["put_vs_disk_ratio"] = round(results["put_MBps"] / results["disk_fsync_MBps"], 2)
    return results


def run_tls(root: Path, big_mb: int, small: int, rounds: int) -> dict[str, float]:
    """The transfer figures of an open cluster and a secure one, both running, their rounds
    alternating (which goes first alternates too)."""
    folder = root / "tls"
    make_cluster_dir(folder, ["p1", "p2", "p3"])
    modes = {"plain": None, "tls": folder}
    clusters = {mode: LocalCluster(root / f"cluster-{mode}", 3, tls_dir=tls_dir)
                for mode, tls_dir in modes.items()}
    figures: dict[str, dict[str, float]] = {}
    transfers: dict[str, TransferRounds] = {}
    try:
        for mode, cluster in clusters.items():
            figures[mode] = {"converge_s": round(cluster.start(), 3)}
        time.sleep(2)
        for mode, cluster in clusters.items():
            transfers[mode] = TransferRounds(cluster, root / "big.bin", big_mb, small)
        everyone = [pid for transfer in transfers.values() for pid in transfer.pids]
        for step in (TransferRounds.big, TransferRounds.small_puts, TransferRounds.small_gets):
            for round_ in range(rounds):
                order = list(transfers.values())
                for transfer in order if round_ % 2 == 0 else reversed(order):
                    settle(everyone)
                    step(transfer, round_)
        for mode, transfer in transfers.items():
            figures[mode].update(transfer.figures())
            transfer.close()
    finally:
        for cluster in clusters.values():
            cluster.stop()
    results: dict[str, float] = {}
    for key, plain in figures["plain"].items():
        tls = figures["tls"][key]
        results[f"{key}_plain"] = plain
        results[f"{key}_tls"] = tls
        if not key.endswith(("_ms", "_s", "_per_MB")):
            results[f"{key}_tls_pct"] = round(100 * tls / plain, 1)
    return results


class Discard:
    """A sink that drops what it is given (gets measure the cluster, not the local disk)."""

    def write(self, data: bytes) -> int:
        return len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--big-mb", type=int, default=64, help="size of the large file (MiB)")
    parser.add_argument("--small", type=int, default=400, help="number of 4 KiB operations")
    parser.add_argument(
        "--move-mb", type=int, default=1024, help="size of the file moved (MiB, default 1 GiB)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds each median is of")
    parser.add_argument("--dir", type=Path, help="where data goes (default: a temp dir)")
    parser.add_argument(
        "--tls", action="store_true", help="open vs secure cluster, side by side (see above)"
    )
    args = parser.parse_args(argv)
    keep_buffers_in_heap(CLIENT_BUFFER)  # the clients measured run as in the qfs program
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="qfs-bench-") as tmp:
        if args.tls:
            results = run_tls(Path(tmp), args.big_mb, args.small, args.rounds)
        else:
            results = run(Path(tmp), args.big_mb, args.small, args.move_mb, args.rounds)
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
