"""What a replica notes for garbage collection: a writer's blocks, never repair traffic."""

from __future__ import annotations

from pathlib import Path

from gossip.wire import Message
from peer.replica import Replica
from storage.blocks import MemoryBlockStore, block_hash
from storage.records import RecordStore
from tests.simnet import inline, run


def test_a_writers_block_is_noted_and_a_repair_copy_is_not(tmp_path: Path) -> None:
    records = RecordStore(tmp_path / "r.sqlite")
    try:
        replica = Replica(MemoryBlockStore(), records, inline)
        handlers = replica.handlers()
        mark = replica.activity.mark()
        written, copied, checked = b"a write", b"an anti-entropy copy", b"a hand-over check"
        run(
            handlers["block.put"](
                Message("block.put", {"hash": block_hash(written), "data": written})
            )
        )
        args = {"hash": block_hash(copied), "data": copied, "repair": True}
        run(handlers["block.put"](Message("block.put", args)))
        replica.blocks.put(checked)
        run(
            handlers["block.has"](
                Message("block.has", {"hashes": [block_hash(checked)], "repair": True})
            )
        )
        spared = [
            block
            for block in (written, copied, checked)
            if not replica.activity.delete_unless_noted(block_hash(block), mark, lambda b: True)
        ]
        assert spared == [written]
    finally:
        records.close()
