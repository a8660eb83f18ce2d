"""The coordinator against real replicas joined by a simulated network (tests/simnet.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from twisted.internet import defer

from peer.body import FileBody
from peer.coordinator import BLOCK_WINDOW, BLOCKS_IN_FLIGHT, Coordinator
from peer.errors import ConflictingVersions, NotFound, Unavailable
from peer.manifest import manifest_key
from peer.repair.handoff import HintedHandoff
from peer.replica import HINT_PREFIX
from peer.versions import decode_version
from tests.simnet import BLOCK, inline, run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def put(coordinator: Coordinator, path: str, data: bytes, **kw) -> dict:
    return run(coordinator.put_file(path, FileBody(io.BytesIO(data)), **kw))


def get(coordinator: Coordinator, path: str, version: str | None = None, r=None) -> bytes:
    resolved = run(coordinator.resolve(path, version, r))

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in coordinator.stream(resolved.manifest)])

    return run(collect())


def test_round_trip_of_empty_inline_and_multi_block_files(cluster) -> None:
    _network, coordinators = cluster(4)
    a, b = coordinators["n0"], coordinators["n3"]
    big = random.Random(1).randbytes(25_600)  # 7 blocks of 4 KiB, all different
    for path, data in [("/empty", b""), ("/small.txt", b"hello"), ("/dir/big.bin", big)]:
        reply = put(a, path, data)
        assert reply["size"] == len(data)
        assert get(b, path) == data
    listing = run(b.list_directory("/"))
    assert [(e["name"], e["type"]) for e in listing] == [
        ("dir", "dir"),
        ("empty", "file"),
        ("small.txt", "file"),
    ]
    assert run(a.list_directory("/dir"))[0]["size"] == len(big)
    stat = run(b.stat("/dir/big.bin"))
    assert len(stat["blocks"]) == 7
    assert [len(block["holders"]) for block in stat["blocks"]] == [3] * 7


def test_identical_blocks_are_not_sent_again(cluster) -> None:
    network, coordinators = cluster(3)
    data = random.Random(2).randbytes(BLOCK * 3)
    put(coordinators["n0"], "/one", data)
    network.calls.clear()
    put(coordinators["n1"], "/two", data)
    assert [method for _, method in network.calls].count("block.has") == 3 * 2  # n1 is local
    assert "block.put" not in [method for _, method in network.calls]


def test_one_peer_down_writes_and_reads_still_work(cluster) -> None:
    network, coordinators = cluster(3)
    network.kill("n2")
    put(coordinators["n0"], "/f", b"data" * 5000)
    assert get(coordinators["n1"], "/f") == b"data" * 5000


def test_two_of_three_down_write_is_503_and_nothing_is_written(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/kept", b"before")
    network.kill("n1")
    network.kill("n2")
    with pytest.raises(Unavailable, match="quorum not met"):
        put(coordinators["n0"], "/lost", b"after")
    with pytest.raises(Unavailable):
        get(coordinators["n0"], "/kept")
    assert get(coordinators["n0"], "/kept", r=1) == b"before"
    network.revive("n1")
    network.revive("n2")
    with pytest.raises(NotFound):
        get(coordinators["n1"], "/lost")


def test_sloppy_quorum_hint_is_handed_over_when_the_home_returns(cluster) -> None:
    network, coordinators = cluster(5)
    coordinator = coordinators["n0"]
    homes = coordinator.homes("/hinted")
    down = next(h for h in homes if h != "n0")
    network.kill(down)
    put(coordinator, "/hinted", b"payload" * 1000)
    stand_ins = [n for n, r in network.replicas.items() if list(r.records.keys(HINT_PREFIX))]
    assert stand_ins
    assert not set(stand_ins) & set(homes)
    assert network.replicas[down].records.get(manifest_key("/hinted")) == []
    network.revive(down)
    for stand_in in stand_ins:
        replica = network.replicas[stand_in]
        handoff = HintedHandoff(coordinators[stand_in], replica.blocks, replica.records, inline)
        assert handoff.pending() >= 1  # counted as soon as written, before any round ran
        assert run(handoff.deliver()) >= 1
        assert list(replica.records.keys(HINT_PREFIX)) == []
        assert handoff.pending() == 0
    assert len(network.replicas[down].records.get(manifest_key("/hinted"))) == 1
    for stand_in in stand_ins:
        network.kill(stand_in)
    assert get(coordinators[down], "/hinted") == b"payload" * 1000


def test_read_repair_brings_a_stale_replica_up_to_date(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/r", b"v1")
    network.kill("n2")
    put(coordinators["n0"], "/r", b"v2")
    network.revive("n2")
    stale = network.replicas["n2"].records.get(manifest_key("/r"))
    assert len(stale) == 1
    assert get(coordinators["n2"], "/r") == b"v2"
    fresh = network.replicas["n2"].records.get(manifest_key("/r"))
    assert fresh != stale
    assert coordinators["n2"].read_repairs >= 1


def test_concurrent_writes_make_siblings_and_a_write_with_the_context_resolves_them(
    cluster,
) -> None:
    _network, coordinators = cluster(3)
    first = put(coordinators["n0"], "/c", b"base")
    seen = decode_version(first["version"])
    put(coordinators["n1"], "/c", b"from n1", context=seen)
    put(coordinators["n2"], "/c", b"from n2", context=seen)
    with pytest.raises(ConflictingVersions) as conflict:
        get(coordinators["n0"], "/c")
    siblings = conflict.value.extra["siblings"]
    assert len(siblings) == 2
    read = {get(coordinators["n0"], "/c", version=s["version"]) for s in siblings}
    assert read == {b"from n1", b"from n2"}
    listing = run(coordinators["n1"].list_directory("/"))
    assert listing[0]["conflict"] is True
    context = decode_version(conflict.value.extra["version"])
    put(coordinators["n0"], "/c", b"resolved", context=context)
    assert get(coordinators["n1"], "/c") == b"resolved"


def test_repeated_writes_without_context_never_make_siblings(cluster) -> None:
    _network, coordinators = cluster(3)
    for i in range(5):
        put(coordinators[f"n{i % 3}"], "/same", f"v{i}".encode())
    assert get(coordinators["n0"], "/same") == b"v4"


def test_stale_context_from_the_same_coordinator_never_reuses_a_clock(cluster) -> None:
    """A reused clock would make replicas keep the older value: an acknowledged write lost."""
    _network, coordinators = cluster(3)
    base = decode_version(put(coordinators["n0"], "/s", b"base")["version"])
    newer = put(coordinators["n0"], "/s", b"newer")
    last = put(coordinators["n0"], "/s", b"with old context", context=base)
    assert last["version"] != newer["version"]
    assert get(coordinators["n1"], "/s") == b"with old context"


def test_delete_is_a_tombstone_and_hides_the_file(cluster) -> None:
    _network, coordinators = cluster(3)
    put(coordinators["n0"], "/d/x", b"1")
    run(coordinators["n1"].delete_file("/d/x"))
    with pytest.raises(NotFound):
        get(coordinators["n2"], "/d/x")
    assert run(coordinators["n2"].list_directory("/d")) == []
    assert run(coordinators["n2"].list_directory("/"))[0]["name"] == "d"
    with pytest.raises(NotFound):
        run(coordinators["n2"].delete_file("/d/x"))
    with pytest.raises(NotFound):
        run(coordinators["n2"].list_directory("/nowhere"))


def test_a_read_takes_blocks_from_the_coordinators_own_store_first(cluster) -> None:
    """Before: blocks came from the first replica in ring order, so a peer holding every
    block still fetched two thirds of a file from the others (over TLS, encrypted twice)."""
    network, coordinators = cluster(3)
    data = random.Random(3).randbytes(BLOCK * 6)
    put(coordinators["n0"], "/local", data)
    network.calls.clear()
    assert get(coordinators["n2"], "/local") == data
    assert [method for _, method in network.calls].count("block.get") == 0
    first = run(coordinators["n2"].resolve("/local", None, None)).manifest.blocks[0].hash
    network.replicas["n2"].blocks.corrupt(first)  # a bad local copy: fetched from another
    assert get(coordinators["n2"], "/local") == data
    assert [method for _, method in network.calls].count("block.get") == 1
    assert first in network.replicas["n2"].blocks.quarantined()


def test_a_corrupt_replica_is_skipped_and_quarantines_its_copy(cluster) -> None:
    network, coordinators = cluster(3)
    data = b"z" * (BLOCK + 10)
    put(coordinators["n0"], "/z", data)
    first_block = run(coordinators["n0"].resolve("/z", None, None)).manifest.blocks[0].hash
    first_holder = coordinators["n0"].targets(first_block)[0].node
    network.replicas[first_holder].blocks.corrupt(first_block)
    assert get(coordinators["n1"], "/z") == data
    assert first_block in network.replicas[first_holder].blocks.quarantined()


def test_concurrent_uploads_keep_at_most_blocks_in_flight_between_them(cluster) -> None:
    """Uploads at once through one peer (boto3 sends ten multipart parts at a time): what it
    holds of their blocks (each block and its frames to the replicas) has one bound for all."""
    network, coordinators = cluster(3, w=3)  # a block is done when every copy is: none lag
    held: list[tuple[defer.Deferred, object, object]] = []
    for node in network.handlers:
        real = network.handlers[node]["block.put"]

        def holding(request, real=real):  # type: ignore[no-untyped-def]
            waiting: defer.Deferred = defer.Deferred()
            held.append((waiting, real, request))
            return waiting

        network.handlers[node]["block.put"] = holding
    uploads = 3
    assert uploads * BLOCK_WINDOW > BLOCKS_IN_FLIGHT  # what one window each would allow
    bodies = [FileBody(io.BytesIO(random.randbytes(12 * BLOCK))) for _ in range(uploads)]
    puts = [
        defer.ensureDeferred(coordinators["n0"].put_file(f"/f{i}", body))
        for i, body in enumerate(bodies)
    ]
    most = 0
    while held:
        blocks = {request.body["hash"] for _, _, request in held}
        most = max(most, len(blocks))
        waiting, real, request = held.pop(0)
        defer.ensureDeferred(real(request)).chainDeferred(waiting)
    assert all(put.called for put in puts)
    assert 0 < most <= BLOCKS_IN_FLIGHT
