"""Storage benchmark: block and record throughput against the disk's raw fsync'd write speed.

    python tests/bench/storage.py [--json] [--mb 256] [--dir DIR]

Block puts go through DiskBlockStore with fsync on (temp file, fdatasync, rename, directory
fsync per block), one at a time and then from THREADS threads at once (the peer keeps a window
of blocks in flight, and concurrent fsyncs share journal commits). The raw figure writes the
same amount to one file in 1 MiB writes followed by one fsync (like ``dd conv=fsync``); it is
measured before and after the block puts and the mean is the baseline. Gets read back blocks
the page cache may still hold: they measure verification (read + BLAKE3), not the disk.
MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# This file is named storage.py: keep its folder from shadowing the storage package.
sys.path[0] = str(Path(__file__).resolve().parents[2])

from storage.blocks import DiskBlockStore  # noqa: E402
from storage.records import RecordStore, Sibling  # noqa: E402
from storage.vclock import VectorClock  # noqa: E402

BLOCK = 1 << 20
MB = 10**6
THREADS = 4


def make_blocks(count: int, first: int = 0) -> list[bytes]:
    """``count`` distinct 1 MiB blocks: one random MiB with a distinct 8-byte head each."""
    pool = os.urandom(BLOCK)
    return [i.to_bytes(8, "big") + pool[8:] for i in range(first, first + count)]


def raw_write(path: Path, blocks: list[bytes]) -> float:
    """Seconds to write ``blocks`` to one new file then fsync it once (the disk's best case)."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in blocks:
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def block_puts(store: DiskBlockStore, blocks: list[bytes], threads: int = 1) -> float:
    """Seconds to put ``blocks``, one after another or from ``threads`` threads."""
    start = time.perf_counter()
    if threads == 1:
        for block in blocks:
            store.put(block)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(store.put, blocks))
    return time.perf_counter() - start


def block_gets(store: DiskBlockStore) -> float:
    """MB/s of reading and verifying every stored block."""
    hashes = list(store.hashes())
    start = time.perf_counter()
    for block in hashes:
        store.get(block)
    return len(hashes) * BLOCK / (time.perf_counter() - start) / MB


def record_bench(path: Path, single: int, batches: int, batch: int) -> dict[str, float]:
    """Durable puts one at a time, from threads, in put_many batches; then random gets."""
    store = RecordStore(path)
    value = os.urandom(200)  # about a small manifest
    clock = VectorClock({"bench": 1})
    try:
        start = time.perf_counter()
        for i in range(single):
            store.put(f"single/{i:08d}", Sibling(clock, value))
        put_rate = single / (time.perf_counter() - start)

        # Overlapping puts from several threads share commits (group commit).
        start = time.perf_counter()
        with ThreadPoolExecutor(THREADS * 2) as pool:
            list(
                pool.map(
                    lambda i: store.put(f"threads/{i:08d}", Sibling(clock, value)),
                    range(single * 2),
                )
            )
        put_threads_rate = single * 2 / (time.perf_counter() - start)

        start = time.perf_counter()
        for b in range(batches):
            items = [(f"batch/{b:05d}/{i:05d}", Sibling(clock, value)) for i in range(batch)]
            store.put_many(items)
        put_many_rate = batches * batch / (time.perf_counter() - start)

        keys = [
            f"batch/{random.randrange(batches):05d}/{random.randrange(batch):05d}"
            for _ in range(batches * batch)
        ]
        start = time.perf_counter()
        for key in keys:
            store.get(key)
        get_rate = len(keys) / (time.perf_counter() - start)
    finally:
        store.close()
    return {
        "records_put_per_s": put_rate,
        "records_put_threads_per_s": put_threads_rate,
        "records_put_many_per_s": put_many_rate,
        "records_get_per_s": get_rate,
    }


def run(directory: Path, count: int) -> dict[str, float | int]:
    serial, parallel = make_blocks(count), make_blocks(count, first=count)
    amount = count * BLOCK / MB
    raw_before = amount / raw_write(directory / "raw.bin", serial)
    store = DiskBlockStore(directory / "blocks", fsync=True)
    put = amount / block_puts(store, serial)
    put_threads = amount / block_puts(store, parallel, THREADS)
    raw_after = amount / raw_write(directory / "raw.bin", serial)
    raw = (raw_before + raw_after) / 2
    result: dict[str, float | int] = {
        "blocks": count,
        "block_size": BLOCK,
        "raw_write_mb_s": raw,
        "raw_write_before_mb_s": raw_before,
        "raw_write_after_mb_s": raw_after,
        "block_put_mb_s": put,
        "block_put_vs_raw": put / raw,
        "threads": THREADS,
        "block_put_threads_mb_s": put_threads,
        "block_put_threads_vs_raw": put_threads / raw,
        "block_get_mb_s": block_gets(store),
    }
    result.update(record_bench(directory / "records.sqlite", 500, 100, 100))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--mb", type=int, default=256, help="how many 1 MiB blocks to put (default 256)"
    )
    parser.add_argument("--dir", type=Path, help="where to write (default: the system temp dir)")
    args = parser.parse_args(argv)
    if args.mb < 1:
        parser.error("--mb must be at least 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="qfs-bench-", dir=args.dir))
    try:
        result = run(directory, args.mb)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['blocks']} blocks of 1 MiB in {directory.parent} (MB = 10^6 bytes)")
    before, after = result["raw_write_before_mb_s"], result["raw_write_after_mb_s"]
    print(
        f"raw sequential write + fsync  {result['raw_write_mb_s']:9.1f} MB/s"
        f"  (before {before:.1f}, after {after:.1f})"
    )
    print(f"block put (fsync each)        {result['block_put_mb_s']:9.1f} MB/s")
    print(f"block put / raw               {result['block_put_vs_raw']:9.0%}")
    print(f"block put, {THREADS} threads          {result['block_put_threads_mb_s']:9.1f} MB/s")
    print(f"block put, {THREADS} threads / raw    {result['block_put_threads_vs_raw']:9.0%}")
    print(f"block get (verified)          {result['block_get_mb_s']:9.1f} MB/s")
    print(f"records put (durable each)    {result['records_put_per_s']:9.0f} /s")
    print(
        f"records put, {THREADS * 2} threads        {result['records_put_threads_per_s']:9.0f} /s"
    )
    print(f"records put_many (batch 100)  {result['records_put_many_per_s']:9.0f} /s")
    print(f"records get                   {result['records_get_per_s']:9.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
