"""The coordinator under local storage faults and hostile version contexts, against real
replicas on the simulated network (tests/simnet.py): an unreadable block copy, full disks, a
context carrying counters no stored version has."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import cbor2
import pytest

from peer.body import FileBody
from peer.coordinator import Coordinator
from peer.errors import BadRequest, InsufficientStorage
from peer.replica import Replica
from peer.versions import MAX_CONTEXT_COUNTER, decode_version
from storage.blocks import DiskBlockStore, MemoryBlockStore
from storage.fsutil import StorageFull
from storage.vclock import VectorClock
from tests.simnet import BLOCK, SimNetwork, inline, run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def put(coordinator: Coordinator, path: str, data: bytes, **kw) -> dict:
    return run(coordinator.put_file(path, FileBody(io.BytesIO(data)), **kw))


def get(coordinator: Coordinator, path: str) -> bytes:
    resolved = run(coordinator.resolve(path, None, None))

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in coordinator.stream(resolved.manifest)])

    return run(collect())


def swap_blocks(network: SimNetwork, coordinators, node: str, blocks) -> Replica:
    """Give `node` another block store (its records stay); returns its new replica."""
    replica = Replica(blocks, network.replicas[node].records, inline)
    network.replicas[node] = coordinators[node].local = replica
    network.handlers[node] = replica.handlers()
    return replica


class FullBlockStore(MemoryBlockStore):
    """A block store on a disk that is full while `full` is set (reads keep working)."""

    full = True

    def put(self, data: bytes, expected_hash: str | None = None, *, age: float = 0.0) -> str:
        if self.full:
            raise StorageFull("no space for block under /simulated: [Errno 28] No space left")
        return super().put(data, expected_hash, age=age)


def test_a_block_copy_that_fails_to_read_is_served_from_another_replica_and_repaired(
    cluster, tmp_path: Path
) -> None:
    network, coordinators = cluster(3)
    reader = coordinators["n0"]
    disk_store = DiskBlockStore(tmp_path / "n1-blocks", fsync=False)
    disk = swap_blocks(network, coordinators, "n1", disk_store)
    data = random.Random(7).randbytes(6 * BLOCK)
    put(reader, "/f", data)
    blocks = run(reader.resolve("/f", None, None)).manifest.blocks
    for block in blocks:
        network.replicas["n0"].blocks.delete(block.hash)  # only n1 and n2 hold copies
        path = disk.blocks.root / block.hash[:2] / block.hash  # n1's copy: EISDIR on read,
        path.chmod(0o644)  # an OSError like EIO
        path.unlink()
        path.mkdir()
    assert get(reader, "/f") == data
    asked_first = [  # blocks whose read tried n1 before n2 (the ring decides the order)
        b.hash
        for b in blocks
        if [t.node for t in reader.targets(b.hash)].index("n1")
        < [t.node for t in reader.targets(b.hash)].index("n2")
    ]
    assert asked_first
    assert disk.blocks.quarantined() == sorted(asked_first)
    for block_hash in asked_first:  # the bad copies were stored again from the good ones
        assert disk.blocks.get(block_hash) == network.replicas["n2"].blocks.get(block_hash)


def test_full_disks_that_keep_w_from_being_met_give_507_naming_the_peers(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/before", b"x" * (BLOCK + 1))
    full = {n: swap_blocks(network, coordinators, n, FullBlockStore()) for n in ("n1", "n2")}
    with pytest.raises(InsufficientStorage) as info:
        put(coordinators["n0"], "/big", b"y" * (BLOCK + 1))
    assert info.value.status == 507
    assert info.value.extra["peers"] == ["n1", "n2"]
    assert "n1" in info.value.detail and "n2" in info.value.detail
    assert get(coordinators["n0"], "/before") == b"x" * (BLOCK + 1)  # reads keep working
    full["n2"].blocks.full = False
    put(coordinators["n0"], "/big", b"y" * (BLOCK + 1))  # W=2 met by n0 and n2: acknowledged
    assert get(coordinators["n1"], "/big") == b"y" * (BLOCK + 1)


def test_a_full_record_store_gives_507(cluster) -> None:
    network, coordinators = cluster(3)
    for node in ("n1", "n2"):
        records = network.replicas[node].records
        pages = records._conn().execute("PRAGMA page_count").fetchone()[0]
        records._conn().execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(InsufficientStorage) as info:
        put(coordinators["n0"], "/inline", random.Random(3).randbytes(4000))
    assert info.value.extra["peers"] == ["n1", "n2"]


def test_a_context_with_counters_beyond_every_stored_version_is_refused(cluster) -> None:
    _network, coordinators = cluster(3)
    a = coordinators["n0"]
    first = put(a, "/f", b"one")
    context = decode_version(first["version"])
    beyond = VectorClock({**context.entries, "n0": context.entries["n0"] + 1})
    with pytest.raises(BadRequest, match="no stored version of /f has"):
        put(a, "/f", b"crafted", context=beyond)
    huge = VectorClock({"n0": 2**64 - 2})
    with pytest.raises(BadRequest):
        put(a, "/f", b"crafted", context=huge)
    with pytest.raises(BadRequest):
        put(a, "/new", b"crafted", context=VectorClock({"n1": 5}))
    assert get(a, "/f") == b"one"
    put(a, "/f", b"two")  # later writes through the same peer succeed
    put(a, "/f", b"three", context=decode_version(put(a, "/f", b"2b")["version"]))
    assert get(coordinators["n2"], "/f") == b"three"


def test_a_context_newer_than_the_quorum_read_is_checked_against_every_replica(cluster) -> None:
    """r=1 may read a stale replica; the context of a newer read is still accepted."""
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/f", b"old")
    network.kill("n2")
    newer = decode_version(put(coordinators["n0"], "/f", b"new")["version"])
    network.revive("n2")  # n2 holds only "old"
    result = put(coordinators["n2"], "/f", b"newest", context=newer, w=1)
    assert decode_version(result["version"]).descends(newer)


def test_decoding_refuses_counters_beyond_any_the_cluster_issues() -> None:
    def text(entries: dict[str, int]) -> str:
        raw = cbor2.dumps(entries, canonical=True)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    assert decode_version(text({"n0": MAX_CONTEXT_COUNTER})).entries["n0"] == MAX_CONTEXT_COUNTER
    with pytest.raises(ValueError, match="beyond any this cluster issues"):
        decode_version(text({"n0": MAX_CONTEXT_COUNTER + 1}))
    with pytest.raises(ValueError, match="beyond any"):
        decode_version(text({"n0": 2**64 - 2}))
