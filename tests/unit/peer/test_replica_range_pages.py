"""record.range pages: a page of a 100,000-entry directory costs a page of memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from gossip.wire import Message
from peer.manifest import FILE, Entry, entry_prefix
from peer.replica import Replica
from peer.rpc import RpcError
from storage.blocks import MemoryBlockStore
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock
from tests.simnet import inline, run

ENTRIES = 100_000


def test_a_page_of_a_huge_directory_holds_one_page_in_memory(tmp_path: Path) -> None:
    records = RecordStore(tmp_path / "r.sqlite")
    try:
        prefix = entry_prefix("/big")
        value = Entry(FILE, 4096, 1.0).encode()
        clock = VectorClock({"n0": 1})
        records.put_many((f"{prefix}f{i:06d}", Sibling(clock, value)) for i in range(ENTRIES))
        replica = Replica(MemoryBlockStore(), records, inline)

        def page(after: str | None, limit: int | None) -> list:
            args = {"prefix": prefix, "limit": limit, "after": after}
            return run(replica.record_range(Message("record.range", args)))["items"]

        tracemalloc.start()
        found = page("f049999", 1000)
        _, paged_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [k for k, _ in found] == [f"{prefix}f{i:06d}" for i in range(50_000, 51_000)]
        assert paged_peak < 2_000_000  # all 100,000 entries at once: tens of MB
        assert len(page("f099990", 1000)) == 9
        with pytest.raises(RpcError, match="limit"):
            page(None, 0)
    finally:
        records.close()
