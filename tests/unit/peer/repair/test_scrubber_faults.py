"""The scrubber on a disk with read errors: every bad block is skipped or repaired and the
pass carries on (real replicas on the simulated network, a real DiskBlockStore)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from twisted.internet import defer

from peer.body import FileBody
from peer.repair.scrubber import Scrubber
from peer.replica import Replica
from storage.blocks import DiskBlockStore
from tests.simnet import BLOCK, inline, run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def unreadable(store: DiskBlockStore, block_hash: str) -> None:
    """Make the stored copy fail to read (EISDIR, an OSError like EIO)."""
    path = store.root / block_hash[:2] / block_hash
    path.chmod(0o644)
    path.unlink()
    path.mkdir()


def test_a_pass_skips_unreadable_blocks_repairs_what_it_can_and_finishes(
    cluster, tmp_path: Path
) -> None:
    network, coordinators = cluster(3)
    disk = DiskBlockStore(tmp_path / "n1-blocks", fsync=False)
    replica = Replica(disk, network.replicas["n1"].records, inline)
    network.replicas["n1"] = coordinators["n1"].local = replica
    network.handlers["n1"] = replica.handlers()
    data = random.Random(5).randbytes(5 * BLOCK)
    run(coordinators["n0"].put_file("/f", FileBody(io.BytesIO(data))))
    hashes = [b.hash for b in run(coordinators["n0"].resolve("/f", None, None)).manifest.blocks]
    bad, lost = hashes[:2], hashes[2]
    for block_hash in [*bad, lost]:
        unreadable(disk, block_hash)
    for node in ("n0", "n2"):  # no good copy of `lost` anywhere: it cannot be repaired now
        network.replicas[node].blocks.delete(lost)

    scrubber = Scrubber(coordinators["n1"], disk, inline, lambda s: defer.succeed(None), 1e9)
    run(scrubber.run_pass())
    assert scrubber.counters.passes == 1  # the pass finished
    assert scrubber.counters.corrupt == 3
    assert scrubber.counters.repaired == 2
    assert scrubber.counters.verified == 2  # the two good blocks
    for block_hash in bad:
        assert disk.get(block_hash) == network.replicas["n0"].blocks.get(block_hash)
    assert not disk.has(lost)
    assert sorted(disk.quarantined()) == sorted([*bad, lost])
