"""Anti-entropy scan benchmark: the CPU one scan of a peer's records costs, the first (which
reads and digests every record) and those after it (kept digests and homes). Every exchange
scans several times on both peers, in a worker thread that holds the GIL while it runs.

    python tests/bench/scan.py [--json] [--files 30000] [--scans 8]

A real record store holding `--files` files' records (a manifest and a directory entry each,
in 50 directories), scanned for one partner on a ring of 5 members with N=3; prints the
first scan's CPU seconds and the median and minimum of the `--scans` after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peer.repair.antientropy import RECORDS, AntiEntropy
from peer.ring import HashRing
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock
from tests.support import print_results

MEMBERS = ["a", "b", "c", "d", "e"]


def run(root: Path, files: int, scans: int) -> dict[str, float]:
    store = RecordStore(root / "records.sqlite")
    try:
        clock, value = VectorClock({"a": 1}), os.urandom(300)
        items = []
        for i in range(files):
            directory = f"/bench/d{i % 50}"
            items.append((f"m:{directory}/{i}", Sibling(clock, value)))
            items.append((f"e:{directory}\0{i}", Sibling(clock, value[:80])))
        store.put_many(items)
        # the scan reads only this peer's id and N from the coordinator, and its records
        coordinator = SimpleNamespace(
            cluster=SimpleNamespace(self_id="a"), settings=SimpleNamespace(n=3)
        )
        anti_entropy = AntiEntropy(coordinator, SimpleNamespace(records=store), None, time.time)
        ring, up = HashRing(MEMBERS), set(MEMBERS)
        spent = []
        for _ in range(scans + 1):
            started = time.process_time()
            anti_entropy._scan(RECORDS, "b", ring, 3, up)
            spent.append(time.process_time() - started)
    finally:
        store.close()
    return {
        "records": 2 * files,
        "first_scan_s": round(spent[0], 3),
        "scan_median_s": round(statistics.median(spent[1:]), 3),
        "scan_min_s": round(min(spent[1:]), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--files", type=int, default=30_000, help="files in the store")
    parser.add_argument("--scans", type=int, default=8, help="scans after the first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qfs-scan-bench-") as tmp:
        print_results(run(Path(tmp), args.files, args.scans), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
