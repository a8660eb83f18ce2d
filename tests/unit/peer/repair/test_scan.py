"""Anti-entropy scans keep each placement's homes between scans (per ring and N) and pause
every SCAN_SLICE items, so that the reactor thread gets the GIL while a scan runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from peer.repair.antientropy import RECORDS, SCAN_SLICE, AntiEntropy
from peer.repair.digest import BUCKETS
from peer.ring import HashRing
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock

COUNT = 2 * SCAN_SLICE + 7


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    records = RecordStore(tmp_path / "records.sqlite")
    clock = VectorClock({"a": 1})
    records.put_many([(f"f:/d/{i}", Sibling(clock, b"v")) for i in range(COUNT)])
    yield records
    records.close()


def anti_entropy(store: RecordStore, pauses: list[int] | None = None) -> AntiEntropy:
    """Anti-entropy on peer "a" holding `store` (a scan reads nothing else of its peer)."""
    cluster, settings = SimpleNamespace(self_id="a"), SimpleNamespace(n=3)
    coordinator = SimpleNamespace(cluster=cluster, settings=settings)
    pause = (lambda: pauses.append(1)) if pauses is not None else (lambda: None)
    return AntiEntropy(coordinator, SimpleNamespace(records=store), None, lambda: 0.0, pause=pause)


def homed_on(node: str, ring: HashRing, n: int) -> set[str]:
    return {f"f:/d/{i}" for i in range(COUNT) if node in ring.preference(f"/d/{i}", n)}


def test_a_scan_after_the_ring_or_n_changed_places_keys_on_the_new_homes(
    store: RecordStore,
) -> None:
    scanner = anti_entropy(store)
    small, large = HashRing(["a", "b", "c"]), HashRing(["a", "b", "c", "d", "e"])
    for ring, n in ((small, 3), (small, 3), (large, 3), (large, 3), (large, 2), (small, 3)):
        scan = scanner._scan(RECORDS, "b", ring, n, set(ring.members))
        assert set(scan.orphans) == {f"f:/d/{i}" for i in range(COUNT)} - homed_on("a", ring, n)
        shared = homed_on("a", ring, n) & homed_on("b", ring, n)
        assert set(scan.tree.keys_in(list(range(BUCKETS)))) == shared
    assert scan.orphans == []  # back on three peers with N=3: everything is homed here


def test_a_scan_pauses_every_slice_of_items(store: RecordStore) -> None:
    pauses: list[int] = []
    scanner = anti_entropy(store, pauses)
    ring = HashRing(["a", "b", "c", "d", "e"])
    scanner._scan(RECORDS, "b", ring, 3, set(ring.members))
    assert len(pauses) == 4  # the first scan reads every record (2 pauses), then looks (2)
    scanner._scan(RECORDS, "b", ring, 3, set(ring.members))
    assert len(pauses) == 6  # kept digests: only the look
