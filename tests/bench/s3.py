"""S3 benchmark: the same work through boto3 and through the native HTTP API, in one run on
one 3-peer cluster (N=3, R=2, W=2, fsync on, an admin token), both acting as the same user
(S3 requests signed with the user's key, native ones with the user's bearer token), so both
pay the same permission checks.

    python tests/bench/s3.py [--json] [--big-mb 64] [--small 300] [--multipart-mb 1024]
                             [--dir DIR]

Prints, for native and S3: put/get throughput of a large file (median of 3, single-request
PutObject/GetObject), 4 KiB put/get rates with one client and with 16 concurrent clients, and
the S3/native ratio of each; then a multipart upload of `--multipart-mb` MiB through boto3's
managed transfer (8 MiB parts, 10 threads) with the peers' peak RSS meanwhile.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tests.bench.cluster import Discard, PeakRss, percentile, rss_mb, timed_ops
from tests.support import LocalCluster, free_port, print_results

MiB = 1024 * 1024
ROUNDS = 3


class RandomFile(io.RawIOBase):
    """`size` pseudo-random bytes, made as they are read (nothing held on disk or in memory)."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = os.urandom(MiB)
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self._left, MiB)
        self._turn += 1
        head = self._turn.to_bytes(8, "big")
        chunk = (head + self._block)[:n]
        buffer[:n] = chunk
        self._left -= n
        return n


def s3_client(endpoint: str, key: dict[str, str]):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"],
        region_name="us-east-1",
        config=Config(max_pool_connections=20),
    )


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
        native = cluster.client("p1", timeout=600, token=user_token)
        native_reader = cluster.client("p2", timeout=600, token=user_token)

        figures: dict[str, list[float]] = {}
        for round_ in range(ROUNDS):  # interleaved, so both see the same noisy machine
            data = os.urandom(big_mb * MiB)
            started = time.perf_counter()
            native.put(f"/native/big{round_}", data)
            figures.setdefault("native_put_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            started = time.perf_counter()
            s3.put_object(Bucket="bench", Key=f"big{round_}", Body=data)
            figures.setdefault("s3_put_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            started = time.perf_counter()
            native_reader.get(f"/native/big{round_}", Discard())
            figures.setdefault("native_get_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
            started = time.perf_counter()
            body = s3_reader.get_object(Bucket="bench", Key=f"big{round_}")["Body"]
            for _ in body.iter_chunks(MiB):
                pass
            figures.setdefault("s3_get_MBps", []).append(
                len(data) / (time.perf_counter() - started) / 1e6
            )
        for name, values in figures.items():
            results[name] = round(statistics.median(values), 1)

        payload = os.urandom(4096)
        names = ["p1", "p2", "p3"]
        for label, count in (("", 1), ("_c16", 16)):
            natives = [cluster.client(names[i % 3], token=user_token) for i in range(count)]
            s3s = [s3_client(endpoints[i % 3], key) for i in range(count)]
            ops = small * (2 if count > 1 else 1)
            rate, lat = timed_ops(
                natives, ops, lambda c, i, tag=label: c.put(f"/native/s{tag}/{i}", payload)
            )
            results[f"native_small_put_ops{label}"] = round(rate, 1)
            rate, lat = timed_ops(
                s3s,
                ops,
                lambda c, i, tag=label: c.put_object(
                    Bucket="bench", Key=f"s{tag}/{i}", Body=payload
                ),
            )
            results[f"s3_small_put_ops{label}"] = round(rate, 1)
            results[f"s3_small_put_p99_ms{label}"] = round(percentile(lat, 0.99), 2)
            rate, _ = timed_ops(
                natives, ops, lambda c, i, tag=label: c.get_bytes(f"/native/s{tag}/{i}")
            )
            results[f"native_small_get_ops{label}"] = round(rate, 1)
            rate, lat = timed_ops(
                s3s,
                ops,
                lambda c, i, tag=label: c.get_object(Bucket="bench", Key=f"s{tag}/{i}")[
                    "Body"
                ].read(),
            )
            results[f"s3_small_get_ops{label}"] = round(rate, 1)
            results[f"s3_small_get_p99_ms{label}"] = round(percentile(lat, 0.99), 2)
            for c in natives:
                c.close()
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
            results["idle_rss_MB_max"] = round(max(rss_mb(p.pid) for p in cluster.peers), 1)
            peak = PeakRss([p.pid for p in cluster.peers])
            transfer = TransferConfig(multipart_chunksize=8 * MiB, max_concurrency=10)
            started = time.perf_counter()
            s3.upload_fileobj(
                RandomFile(multipart_mb * MiB), "bench", "multipart.bin", Config=transfer
            )
            elapsed = time.perf_counter() - started
            results["s3_multipart_MBps"] = round(multipart_mb * MiB / elapsed / 1e6, 1)
            results["s3_multipart_s"] = round(elapsed, 1)
            results["s3_multipart_peak_rss_MB"] = round(peak.stop(), 1)
            size = s3.head_object(Bucket="bench", Key="multipart.bin")["ContentLength"]
            assert size == multipart_mb * MiB, size
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
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="qfs-s3-bench-") as tmp:
        results = run(Path(tmp), args.big_mb, args.small, args.multipart_mb)
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
