"""Hostile input in volume, beyond tests/integration/test_peer_bad_input.py: frames signed with
the right cluster key but malformed, and many half-sent frames held open, while clients work.
Peers must keep serving, answer every call, and store nothing from any of it."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip.wire import Codec
from tests.chaos.checker import check
from tests.chaos.history import History
from tests.chaos.hostile import RPC_METHODS, Burst, malformed_rpc_args, rpc_call
from tests.chaos.runner import observe
from tests.chaos.workload import Worker
from tests.support import LocalCluster, running_cluster

FILES = {f"/hostile/keep/{i}": os.urandom(size) for i, size in enumerate([0, 100, 9000, 1_300_000])}


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[LocalCluster, bytes]]:
    key = os.urandom(32).hex().encode()
    (tmp_path / "cluster.key").write_bytes(key)
    (tmp_path / "cluster.key").chmod(0o600)  # a key others may read is refused
    extra = ["--cluster-key-file", str(tmp_path / "cluster.key")]
    with running_cluster(tmp_path, 3, extra) as cluster:
        with cluster.client("p1") as client:
            for path, data in FILES.items():
                client.put(path, data)
        yield cluster, key


def assert_files_intact(cluster: LocalCluster) -> None:
    for peer in cluster.peers:
        with cluster.client(peer.name) as client:
            for path, data in FILES.items():
                assert client.get_bytes(path, r=3) == data, (peer.name, path)


def test_malformed_calls_signed_with_the_cluster_key_are_refused_and_store_nothing(
    keyed,
) -> None:
    cluster, key = keyed
    codec = Codec(key)
    rng = random.Random(11)
    forged: list[str] = []
    for peer in cluster.peers:
        port = cluster.ports[peer.name][0]
        for _ in range(150):
            method = rng.choice(RPC_METHODS)
            args = malformed_rpc_args(rng, method)
            reply = rpc_call(port, codec, method, args)
            assert reply.type == "error", (method, args, reply)
            assert reply.body["code"] != "internal", (method, reply.body)
            if method == "block.put" and isinstance(args.get("hash"), str):
                forged.append(args["hash"])
    hashes = [h for h in forged if len(h) == 64]
    assert hashes
    for peer in cluster.peers:
        reply = rpc_call(cluster.ports[peer.name][0], codec, "block.has", {"hashes": hashes})
        assert reply.type == "reply"
        assert not any(reply.body["result"]["have"]), "a block was stored under a wrong hash"
    assert_files_intact(cluster)


def test_half_sent_frames_held_open_while_clients_work(keyed, tmp_path: Path) -> None:
    cluster, key = keyed
    rng = random.Random(5)
    held: list[socket.socket] = []
    history = History()
    stop = threading.Event()
    urls = {p.name: p.http_url for p in cluster.peers}
    keys = [f"/hostile/load/{i}" for i in range(6)]
    # each worker its own keys: concurrent writes to one key are test_regressions' business
    workers = [Worker(f"w{i}", urls, keys[i::3], history, stop, f"hostile:{i}") for i in range(3)]
    burst = Burst(random.Random(6), key, keys)
    try:
        for worker in workers:
            worker.start()
        for i in range(300):
            port = cluster.ports[cluster.peers[i % 3].name][0]
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            declared = rng.choice([16 * 1024 * 1024, 1 << 20, 5000])
            sock.sendall(struct.pack(">I", declared) + rng.randbytes(rng.randrange(4000)))
            held.append(sock)
            if i % 10 == 0:
                peer = cluster.peers[rng.randrange(3)].name
                burst.rpc(cluster.ports[peer][0])
                burst.gossip(cluster.ports[peer][0])
                burst.http(urls[peer])
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    assert burst.failures == []
    assert history.problems == []
    assert all(w.crash is None for w in workers)
    assert sum(1 for op in history.ops if op.outcome == "ok") > 0
    assert all(p.running() for p in cluster.peers)
    final, converged, _ = observe(cluster.peers, keys, 30)
    assert converged == []
    assert check(history.ops, final) == []
    assert_files_intact(cluster)
