"""Child process for tests/integration/test_storage_crash.py (not a test module).

    storage_child.py write DIR SEED   open DIR, print "ready", then write blocks and records
                                      forever, printing one line after each write returns
    storage_child.py hold DIR         open DIR, print "ready", keep it until stdin closes
    storage_child.py open DIR         try to open DIR; exit 3 printing the error if locked

Acknowledgement lines of "write" (each printed only after the write is durable):
    B <hash>                      a block
    R <key> <counter>             a record written by put
    M <key> <counter> ...         records written together by put_many
"""

from __future__ import annotations

import random
import sys

from storage.datadir import DataDir, DataDirLocked
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock

WRITER = "w"


def record_value(key: str, counter: int) -> bytes | None:
    """The value the writer stores at ``counter``: every 7th write is a tombstone."""
    return None if counter % 7 == 0 else f"{key}:{counter}".encode()


def next_sibling(records: RecordStore, key: str) -> Sibling:
    """A sibling that supersedes whatever the key holds, as a coordinator's write does."""
    clock = VectorClock()
    for sibling in records.get(key):
        clock = clock.merge(sibling.clock)
    clock = clock.increment(WRITER)
    return Sibling(clock, record_value(key, clock.entries[WRITER]))


def write(path: str, seed: int) -> None:
    rng = random.Random(seed)
    with DataDir(path) as data:
        print("ready", flush=True)
        while True:
            choice = rng.random()
            if choice < 0.4:
                block = rng.randbytes(rng.randint(1, 256 * 1024))
                print("B", data.blocks.put(block), flush=True)
            elif choice < 0.8:
                key = f"k{rng.randrange(20)}"
                sibling = next_sibling(data.records, key)
                data.records.put(key, sibling)
                print("R", key, sibling.clock.entries[WRITER], flush=True)
            else:
                keys = rng.sample([f"m{i}" for i in range(20)], 5)
                items = [(key, next_sibling(data.records, key)) for key in keys]
                data.records.put_many(items)
                acks = (f"{key} {s.clock.entries[WRITER]}" for key, s in items)
                print("M", " ".join(acks), flush=True)


def main(argv: list[str]) -> int:
    mode, path = argv[0], argv[1]
    if mode == "write":
        write(path, int(argv[2]))
    elif mode == "hold":
        with DataDir(path):
            print("ready", flush=True)
            sys.stdin.read()
    elif mode == "open":
        try:
            DataDir(path).close()
        except DataDirLocked as exc:
            print(exc, flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
