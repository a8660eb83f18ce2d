"""Anti-entropy keeps record digests between scans: a scan reads only what was written since
the last one, and still sees every change (the digests equal a full read's)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.repair import antientropy
from peer.repair.antientropy import FULL_SCAN_EVERY, RecordDigests, placement_of
from peer.repair.digest import record_digest
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    records = RecordStore(tmp_path / "records.sqlite")
    yield records
    records.close()


class CountingRange:
    """Counts full reads (RecordStore.range calls) of one store."""

    def __init__(self, store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = store.range

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(store, "range", counted)


def put(store: RecordStore, key: str, counter: int, value: bytes | None = b"v") -> None:
    store.put(key, Sibling(VectorClock({"n": counter}), value))


def full_read(store: RecordStore) -> dict[str, bytes]:
    """What scanning every record gives (replicated records only)."""
    return {
        key: record_digest(key, siblings)
        for key, siblings in store.range()
        if siblings and placement_of(key) is not None
    }


def cached(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch, keys: list[str]
) -> tuple[RecordDigests, CountingRange]:
    """`keys` stored (version 1), and a digest cache over the store with its reads counted."""
    for key in keys:
        put(store, key, 1)
    return RecordDigests(store), CountingRange(store, monkeypatch)


def test_a_scan_after_the_first_reads_only_what_was_written_and_matches_a_full_read(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests, reads = cached(store, monkeypatch, [f"f:/d/{i}" for i in range(50)])
    assert len(digests.items()) == 50
    assert reads.calls == 1
    put(store, "f:/d/3", 2)  # a newer version
    put(store, "f:/d/new", 1)
    store.delete("f:/d/7")
    store.put("h:hint", Sibling(VectorClock({"n": 1}), b"local only"))  # never replicated
    items = digests.items()
    assert reads.calls == 1  # no full read: only the four keys were looked at
    assert {key: digest for key, digest, _ in items} == full_read(store)
    assert "h:hint" not in {key for key, _, _ in items}
    assert ("f:/d/new", record_digest("f:/d/new", store.get("f:/d/new")), "/d/new") in items


def test_every_full_scan_every_th_scan_reads_everything_and_catches_what_the_store_missed(
    store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(store, "f:/a", 1)
    put(store, "f:/b", 1)
    digests = RecordDigests(store)
    digests.items()
    with sqlite3.connect(tmp_path / "records.sqlite") as db:  # behind the store's back
        db.execute("DELETE FROM records WHERE key = 'f:/b'")
    for _ in range(FULL_SCAN_EVERY):
        assert "f:/b" in {key for key, _, _ in digests.items()}  # the cache, as it was
    assert {key for key, _, _ in digests.items()} == {"f:/a"}
    assert digests.full_scans == 2


def test_a_store_that_lost_count_or_too_many_records_mean_a_full_read(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests, reads = cached(store, monkeypatch, [f"f:/{i}" for i in range(5)])
    digests.items()
    monkeypatch.setattr("storage.records.MAX_TRACKED_CHANGES", 2)
    for i in range(3):
        put(store, f"f:/{i}", 2)
    assert {key: d for key, d, _ in digests.items()} == full_read(store)
    assert reads.calls == 3  # the first scan, the one after the lost count, full_read's
    monkeypatch.setattr(antientropy, "MAX_CACHED_DIGESTS", 4)
    digests.items()  # five records: these are not kept
    assert reads.calls == 3
    digests.items()
    digests.items()
    assert reads.calls == 5  # read in full each time
