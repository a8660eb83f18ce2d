"""S3 benchmark: the same work through boto3 and through the native HTTP API, in one run on
one 3-peer cluster (N=3, R=2, W=2, fsync on, an admin token), both acting as the same user
(S3 requests signed with the user's key, native ones with the user's bearer token), so both
pay the same permission checks.

    python tests/bench/s3.py [--json] [--big-mb 64] [--small 300] [--multipart-mb 1024]
                             [--dir DIR]

Prints, for native and S3: put/get throughput of a large file (median of 3, single-request
PutObject/GetObject; every put of fresh bytes, as blocks are content-addressed), 4 KiB put/get
rates with one client and with 16 concurrent clients (16 processes, as 16 programs would be:
16 threads of one interpreter would measure its lock), and the S3/native ratio of each; for
one client, the CPU each 4 KiB operation costs the peers and the client (`*_peers_cpu_us`,
`*_client_cpu_us`: boto3 spends more than the native client); then a file of
`--multipart-mb` MiB on disk uploaded through boto3's managed transfer (`upload_file`: 8 MiB
parts, 10 threads) and another of the same size with one native put, with the peers' peak RSS
during the multipart upload and how long its CompleteMultipartUpload took (which reads the
object back for its BLAKE3 hash).

What the client and the protocol cost, measured in the same run, bounds each ratio from above
(`*_bound` figures). With one client a request waits for boto3's CPU: even with peers that
served an S3 request as fast as a native one, the client's extra CPU per operation alone
leaves at most 1 / (1 + native ops/s * extra seconds). An upload's bytes cross two cores that
the client and the peers share; S3 makes them compute digests a native put does not (the
server's MD5 for the ETag, SHA-256 on both ends when the payload is signed, the
`x-amz-checksum-*` algorithm on both ends: read from the request boto3 sent), and at the
cores' use of the native upload those digests alone leave at most native CPU / (native CPU +
digest CPU), the digests timed here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from peer.allocator import CLIENT_BUFFER, keep_buffers_in_heap
from peer.api.s3.payload import checksum
from peer.client.api_client import Client
from tests.bench.cluster import (
    CpuSplit,
    Discard,
    PeakRss,
    fresh_file,
    percentile,
    rss_mb,
    settle,
    timed_ops,
)
from tests.support import LocalCluster, boto_client, free_port, print_results

MiB = 1024 * 1024
ROUNDS = 3


def s3_client(endpoint: str, key: dict[str, str]):  # type: ignore[no-untyped-def]
    return boto_client(endpoint, key, config=Config(max_pool_connections=20))


def timed_processes(make_client, count: int, ops: int, op) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    """Run `ops` operations spread over `count` forked processes, each with its own client
    (`make_client(index)`), all started together once every client is made; (ops/s,
    latencies in ms)."""
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(count + 1)
    results = context.Queue()

    def work(index: int) -> None:
        try:
            client = make_client(index)
        except BaseException:
            ready.abort()  # the run fails at once instead of at the barrier's timeout
            raise
        latencies = []
        ready.wait()
        for i in range(index, ops, count):
            started = time.perf_counter()
            op(client, i)
            latencies.append((time.perf_counter() - started) * 1000)
        results.put((time.perf_counter(), latencies))

    workers = [context.Process(target=work, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)
    started = time.perf_counter()
    ends, latencies = [], []
    for _ in workers:
        end, mine = results.get(timeout=600)
        ends.append(end)
        latencies.extend(mine)
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a benchmark client exited with {worker.exitcode}")
    return ops / (max(ends) - started), latencies


def required_digests(headers: dict[str, str]) -> list[str]:
    """The digests an S3 upload sent with `headers` makes the client and the server compute
    that a native put does not: the server's MD5 (the ETag), SHA-256 on both ends when the
    payload is signed (x-amz-content-sha256 is a hex digest), the checksum algorithm boto3
    announced (x-amz-sdk-checksum-algorithm) on both ends."""
    names = ["md5"]
    if re.fullmatch("[0-9a-f]{64}", headers.get("x-amz-content-sha256", "")):
        names += ["sha256", "sha256"]
    algorithm = headers.get("x-amz-sdk-checksum-algorithm", "").lower()
    if algorithm:
        names += [algorithm, algorithm]
    return names


def digest_seconds(names: list[str], megabytes: float) -> float:
    """The CPU seconds the digests `names` take over `megabytes` MiB here (timed on 64 MiB)."""
    sample = os.urandom(64 * MiB)
    started = time.process_time()
    for name in names:
        (hashlib.md5() if name == "md5" else checksum(name)).update(sample)
    return (time.process_time() - started) * megabytes / 64


def upload_headers(client, operation: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The headers of the last `operation` request `client` sends, filled in as it is sent."""
    seen: dict[str, str] = {}

    def keep(request, **_: object) -> None:  # type: ignore[no-untyped-def]
        seen.clear()
        for name, value in request.headers.items():
            seen[name.lower()] = value.decode() if isinstance(value, bytes) else value

    client.meta.events.register(f"before-send.s3.{operation}", keep)
    return seen


def digest_bound(native_cpu: float, headers: dict[str, str], megabytes: float) -> float:
    """native CPU / (native CPU + the digests S3 adds): the S3/native ratio of an upload of
    `megabytes` MiB at the native upload's use of the cores, were the digests its only extra."""
    extra = digest_seconds(required_digests(headers), megabytes)
    return round(native_cpu / (native_cpu + extra), 2)


def client_bound(native_ops: float, native_client_us: float, s3_client_us: float) -> float:
    """The S3/native ratio of one client's operations if boto3's extra CPU per operation were
    the only difference: 1 / (1 + native ops/s * extra seconds)."""
    return round(1 / (1 + native_ops * max(0.0, s3_client_us - native_client_us) / 1e6), 2)


def warmed(client, index: int):  # type: ignore[no-untyped-def]
    """`client` after one request of each kind the benchmark makes, untimed: boto3 loads its
    service model and resolves the endpoint on first use, in every process."""
    if isinstance(client, Client):
        client.put(f"/native/warm{index}", b"w")
        client.get_bytes(f"/native/warm{index}")
    else:
        client.put_object(Bucket="bench", Key=f"warm{index}", Body=b"w")
        client.get_object(Bucket="bench", Key=f"warm{index}")["Body"].read()
    return client


def small_figures(  # type: ignore[no-untyped-def]
    label: str, count: int, ops: int, native_client, s3_client_of, peer_pids: list[int]
) -> dict:
    """4 KiB puts then gets, natively and through S3, from `count` clients (`*_client(i)`
    makes client i): one in this process, more in processes of their own. With one client,
    also the CPU each operation cost the peers and the client (microseconds)."""
    figures: dict[str, float] = {}

    def measure(name: str, make_client, op) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
        settle(peer_pids)  # the work the step before left behind is not this one's
        if count > 1:
            return timed_processes(make_client, count, ops, op)
        client = make_client(0)
        split = CpuSplit(peer_pids)
        measured = timed_ops([client], ops, op)
        peers, mine = split.stop()
        figures[f"{name}_peers_cpu_us"] = round(1e6 * peers / ops)
        figures[f"{name}_client_cpu_us"] = round(1e6 * mine / ops)
        return measured

    payload = os.urandom(4096)
    rate, _ = measure(
        "native_small_put", native_client, lambda c, i: c.put(f"/native/s{label}/{i}", payload)
    )
    figures[f"native_small_put_ops{label}"] = round(rate, 1)
    rate, lat = measure(
        "s3_small_put",
        s3_client_of,
        lambda c, i: c.put_object(Bucket="bench", Key=f"s{label}/{i}", Body=payload),
    )
    figures[f"s3_small_put_ops{label}"] = round(rate, 1)
    figures[f"s3_small_put_p99_ms{label}"] = round(percentile(lat, 0.99), 2)
    rate, _ = measure(
        "native_small_get", native_client, lambda c, i: c.get_bytes(f"/native/s{label}/{i}")
    )
    figures[f"native_small_get_ops{label}"] = round(rate, 1)
    rate, lat = measure(
        "s3_small_get",
        s3_client_of,
        lambda c, i: c.get_object(Bucket="bench", Key=f"s{label}/{i}")["Body"].read(),
    )
    figures[f"s3_small_get_ops{label}"] = round(rate, 1)
    figures[f"s3_small_get_p99_ms{label}"] = round(percentile(lat, 0.99), 2)
    if count == 1:
        for op in ("put", "get"):
            figures[f"ratio_small_{op}_ops_client_bound"] = client_bound(
                figures[f"native_small_{op}_ops"],
                figures[f"native_small_{op}_client_cpu_us"],
                figures[f"s3_small_{op}_client_cpu_us"],
            )
    return figures


def run(root: Path, big_mb: int, small: int, multipart_mb: int) -> dict[str, float]:
    results: dict[str, float] = {}
    admin = secrets.token_urlsafe(24)
    (root / "admin.token").write_text(admin)
    (root / "admin.token").chmod(0o600)  # a token file others may read is refused
    cluster = LocalCluster(
        root / "cluster", 3, extra=["--admin-token-file", str(root / "admin.token")], token=admin
    )
    s3_ports = {}
    for peer in cluster.peers:
        s3_ports[peer.name] = free_port()
        peer.argv += ["--s3-port", str(s3_ports[peer.name])]
    try:
        cluster.start()

        def qfs(*args: str) -> str:
            command = [sys.executable, "-m", "peer.main", "--peer", cluster.peer("p1").http_url]
            done = subprocess.run(
                [*command, "--token", admin, *args], capture_output=True, text=True, check=True
            )
            return done.stdout

        key = json.loads(qfs("s3", "key", "create", "bench", "--json"))
        user_token = qfs("token", "create", "bench").strip()  # the same user on both APIs
        qfs("mkdir", "/native")
        qfs("chown", "bench", "/native")
        endpoints = [f"http://127.0.0.1:{s3_ports[n]}" for n in ("p1", "p2", "p3")]
        s3 = s3_client(endpoints[0], key)
        s3_reader = s3_client(endpoints[1], key)
        s3.create_bucket(Bucket="bench")
        put_headers = upload_headers(s3, "PutObject")
        native = cluster.client("p1", timeout=600, token=user_token)
        native_reader = cluster.client("p2", timeout=600, token=user_token)

        pids = [peer.pid for peer in cluster.peers]
        figures: dict[str, list[float]] = {}
        native_put_cpu = 0.0
        for round_ in range(ROUNDS):  # interleaved, so both see the same noisy machine
            data = os.urandom(big_mb * MiB)  # fresh for each: blocks are content-addressed
            settle(pids)  # W=2: the third replica may still be writing the step before
            split, started = CpuSplit(pids), time.perf_counter()
            native.put(f"/native/big{round_}", data)
            figures.setdefault("native_put_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            native_put_cpu += sum(split.stop())
            data = os.urandom(big_mb * MiB)
            settle(pids)
            started = time.perf_counter()
            s3.put_object(Bucket="bench", Key=f"big{round_}", Body=data)
            figures.setdefault("s3_put_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            settle(pids)
            started = time.perf_counter()
            native_reader.get(f"/native/big{round_}", Discard())
            figures.setdefault("native_get_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            settle(pids)
            started = time.perf_counter()
            body = s3_reader.get_object(Bucket="bench", Key=f"big{round_}")["Body"]
            for _ in body.iter_chunks(MiB):
                pass
            figures.setdefault("s3_get_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
        for name, values in figures.items():
            results[name] = round(statistics.median(values), 1)
        results["ratio_put_MBps_digest_bound"] = digest_bound(
            native_put_cpu, put_headers, ROUNDS * big_mb
        )

        names = ["p1", "p2", "p3"]
        for label, count in (("", 1), ("_c16", 16)):
            results.update(
                small_figures(
                    label,
                    count,
                    small * (2 if count > 1 else 1),
                    lambda i: warmed(cluster.client(names[i % 3], token=user_token), i),
                    lambda i: warmed(s3_client(endpoints[i % 3], key), i),
                    pids,
                )
            )
        for op in (
            "put_MBps",
            "get_MBps",
            "small_put_ops",
            "small_get_ops",
            "small_put_ops_c16",
            "small_get_ops_c16",
        ):
            results[f"ratio_{op}"] = round(results[f"s3_{op}"] / results[f"native_{op}"], 2)

        if multipart_mb:
            # two files of fresh bytes: the same file twice would be sent the second time as
            # blocks the replicas already hold (content-addressed), moving none of them
            native_source, source = root / "native.bin", root / "multipart.bin"
            for path in (native_source, source):
                fresh_file(path, multipart_mb)
            settle(pids)
            split, started = CpuSplit(pids), time.perf_counter()
            with native_source.open("rb") as data:
                native.put("/native/multipart.bin", data)
            elapsed = time.perf_counter() - started
            native_cpu = sum(split.stop())
            results["native_file_MBps"] = round(multipart_mb * MiB / elapsed / 1e6, 1)
            results["native_file_cpu_s"] = round(native_cpu, 1)
            results["native_file_cores_busy"] = round(native_cpu / elapsed, 2)
            settle(pids)
            results["idle_rss_MB_max"] = round(max(rss_mb(p.pid) for p in cluster.peers), 1)
            peak = PeakRss([p.pid for p in cluster.peers])
            transfer = TransferConfig(multipart_chunksize=8 * MiB, max_concurrency=10)
            complete: list[float] = []  # when boto3's CompleteMultipartUpload began and ended
            for event in ("before-call", "after-call"):
                s3.meta.events.register(
                    f"{event}.s3.CompleteMultipartUpload",
                    lambda **_: complete.append(time.perf_counter()),  # None: boto3 goes on
                )
            part_headers = upload_headers(s3, "UploadPart")
            split, started = CpuSplit(pids), time.perf_counter()
            s3.upload_file(str(source), "bench", "multipart.bin", Config=transfer)
            elapsed = time.perf_counter() - started
            s3_cpu = sum(split.stop())
            results["s3_multipart_MBps"] = round(multipart_mb * MiB / elapsed / 1e6, 1)
            results["s3_multipart_cpu_s"] = round(s3_cpu, 1)
            results["s3_multipart_cores_busy"] = round(s3_cpu / elapsed, 2)
            results["s3_multipart_s"] = round(elapsed, 1)
            results["s3_multipart_complete_s"] = round(complete[1] - complete[0], 2)
            results["s3_multipart_peak_rss_MB"] = round(peak.stop(), 1)
            results["ratio_multipart_MBps"] = round(
                results["s3_multipart_MBps"] / results["native_file_MBps"], 2
            )
            results["ratio_multipart_MBps_digest_bound"] = digest_bound(
                native_cpu, part_headers, multipart_mb
            )
            size = s3.head_object(Bucket="bench", Key="multipart.bin")["ContentLength"]
            assert size == multipart_mb * MiB, size
            source.unlink()
            native_source.unlink()
        native.close()
        native_reader.close()
    finally:
        cluster.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--big-mb", type=int, default=64, help="size of the large file (MiB)")
    parser.add_argument("--small", type=int, default=300, help="number of 4 KiB operations")
    parser.add_argument("--multipart-mb", type=int, default=1024, help="multipart upload (MiB)")
    parser.add_argument("--dir", type=Path, help="where data goes (default: a temp dir)")
    args = parser.parse_args(argv)
    keep_buffers_in_heap(CLIENT_BUFFER)  # the clients measured run as in the qfs program
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="qfs-s3-bench-") as tmp:
        results = run(Path(tmp), args.big_mb, args.small, args.multipart_mb)
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
