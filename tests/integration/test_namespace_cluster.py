"""Directories, move and copy on real `qfs peer` processes (N=3, R=2, W=2) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import httpx
import pytest

from peer.client.api_client import QfsError
from tests.support import LocalCluster, running_cluster

PEERS = ("p1", "p2", "p3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("namespace"), 3) as running:
        yield running


def qfs(cluster: LocalCluster, *args: str, peer: str = "p1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peer.main", "--peer", cluster.peer(peer).http_url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def block_bytes(cluster: LocalCluster) -> dict[str, float]:
    found = {}
    for name in PEERS:
        text = httpx.get(cluster.peer(name).http_url + "/metrics", timeout=5).text
        found[name] = float(re.search(r"^qfs_block_bytes (\S+)$", text, re.M).group(1))
    return found


def names(cluster: LocalCluster, directory: str, peer: str) -> list[str]:
    with cluster.client(peer) as client:
        return sorted(e["name"] for e in client.ls(directory))


def test_mkdir_rmdir_and_ls_of_empty_and_nested_directories(cluster) -> None:
    url = cluster.peer("p1").http_url
    assert httpx.put(url + "/v1/dirs/ns/empty").status_code == 404  # no /ns yet
    assert httpx.put(url + "/v1/dirs/ns").status_code == 201
    assert httpx.put(url + "/v1/dirs/ns/empty").status_code == 201
    assert httpx.put(url + "/v1/dirs/ns/empty").status_code == 409
    assert httpx.put(url + "/v1/dirs/ns/a/b/c").status_code == 404
    assert httpx.put(url + "/v1/dirs/ns/a/b/c?parents=1").status_code == 201
    for peer in PEERS:
        assert names(cluster, "/ns", peer) == ["a", "empty"]
        assert names(cluster, "/ns/empty", peer) == []
        assert names(cluster, "/ns/a/b", peer) == ["c"]
    listed = qfs(cluster, "ls", "-l", "/ns/a", peer="p3")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^drwxr-xr-x\s+admin\s+admin\s+.*b/$", listed.stdout, re.M), listed.stdout
    with cluster.client("p2") as client:
        client.put("/ns/file", b"x")
    assert httpx.put(url + "/v1/dirs/ns/file").status_code == 409
    assert httpx.put(url + "/v1/files/ns/a", content=b"x").status_code == 409
    assert httpx.put(url + "/v1/files/ns/file/below", content=b"x").status_code == 409
    refused = httpx.delete(url + "/v1/dirs/ns/a")
    assert refused.status_code == 409 and refused.json()["error"] == "not_empty"
    assert httpx.delete(url + "/v1/dirs/").status_code == 400
    assert qfs(cluster, "rmdir", "/ns/empty", peer="p2").returncode == 0
    assert httpx.delete(url + "/v1/dirs/ns/a?recursive=1").status_code == 204
    for peer in PEERS:
        assert names(cluster, "/ns", peer) == ["file"]
        assert httpx.get(cluster.peer(peer).http_url + "/v1/dirs/ns/a").status_code == 404
    assert qfs(cluster, "mkdir", "-p", "/ns/a/again").returncode == 0
    assert names(cluster, "/ns/a", "p3") == ["again"]
    stat = json.loads(qfs(cluster, "stat", "/ns/a", "--json", peer="p2").stdout)
    assert (stat["type"], stat["mode"], stat["owner"], stat["group"]) == (
        "dir",
        "0755",
        "admin",
        "admin",
    )


def test_move_and_copy_of_a_file_and_a_directory_of_200_files(cluster, tmp_path: Path) -> None:
    files = {f"/tree/f{i:03}": os.urandom(5000 + i) for i in range(200)}
    files["/tree/sub/big"] = os.urandom(3 * 1024 * 1024 + 5)
    with ThreadPoolExecutor(8) as pool, cluster.client("p1") as client:
        list(pool.map(lambda item: client.put(*item), files.items()))
    before = block_bytes(cluster)
    moved = qfs(cluster, "mv", "/tree/sub/big", "/single/big", "--json", peer="p2")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {"path": "/single/big"}
    assert qfs(cluster, "cp", "/single/big", "/single/copy").returncode == 0
    assert qfs(cluster, "cp", "/single/big", "/single/copy").returncode != 0  # exists: 409
    assert qfs(cluster, "cp", "-f", "/single/big", "/single/copy").returncode == 0
    assert qfs(cluster, "mv", "/single/big", "/tree/sub/big", peer="p3").returncode == 0
    with cluster.client("p3") as client:
        started = time.perf_counter()
        assert client.copy("/tree", "/tree-copy") == {"path": "/tree-copy"}
        copy_s = time.perf_counter() - started
        started = time.perf_counter()
        assert client.move("/tree", "/tree-moved") == {"path": "/tree-moved"}
        move_s = time.perf_counter() - started
        with pytest.raises(QfsError) as missing:
            client.move("/tree", "/elsewhere")
        assert missing.value.status == 404
        with pytest.raises(QfsError) as into_itself:
            client.move("/tree-moved", "/tree-moved/inside")
        assert into_itself.value.status == 400
        with pytest.raises(QfsError) as exists:
            client.move("/tree-copy", "/tree-moved")
        assert exists.value.status == 409
    assert block_bytes(cluster) == before  # no block was written by any move or copy
    for peer in PEERS:
        with cluster.client(peer) as client:
            for path, data in files.items():
                for moved_to in ("/tree-moved", "/tree-copy"):
                    got = client.get_bytes(path.replace("/tree", moved_to, 1))
                    assert blake3.blake3(got).digest() == blake3.blake3(data).digest()
                with pytest.raises(QfsError):
                    client.get_bytes(path)
            assert client.get_bytes("/single/copy") == files["/tree/sub/big"]
    assert "tree" not in names(cluster, "/", "p1")
    print(f"200-file directory: copy {copy_s:.3f}s, move {move_s:.3f}s")


def test_sigkill_of_the_coordinator_during_a_directory_move_of_500_files(tmp_path: Path) -> None:
    files = {f"/src/f{i:03}": f"file {i}".encode() * 20 for i in range(500)}
    with running_cluster(tmp_path, 3) as cluster:
        with ThreadPoolExecutor(8) as pool, cluster.client("p2") as client:
            list(pool.map(lambda item: client.put(*item), files.items()))
        outcome: list[object] = []

        def move() -> None:
            try:
                with cluster.client("p1", timeout=30) as client:
                    outcome.append(client.move("/src", "/dst"))
            except QfsError as e:
                outcome.append(e)

        mover = threading.Thread(target=move)
        with cluster.client("p2", timeout=5) as watcher:
            mover.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if watcher.ls("/dst"):
                        break
                except QfsError:
                    pass
        cluster.kill("p1", signal.SIGKILL)
        mover.join(30)
        with cluster.client("p3") as client:
            old = {e["name"] for e in client.ls("/src")}
            new = {e["name"] for e in client.ls("/dst")}
            print(f"after SIGKILL: {len(old)} at the source, {len(new)} at the destination")
            assert old | new == {p.rsplit("/", 1)[1] for p in files}
            for path, data in files.items():
                name = path.rsplit("/", 1)[1]
                assert client.get_bytes(path if name in old else f"/dst/{name}") == data
            assert client.move("/src", "/dst") == {"path": "/dst"}  # finishes the move
            assert "src" not in {e["name"] for e in client.ls("/")}
            assert len(client.ls("/dst")) == 500
            for path, data in files.items():
                assert client.get_bytes(path.replace("/src", "/dst", 1)) == data
        assert outcome == [] or isinstance(outcome[0], QfsError | dict)


def test_a_chmod_racing_with_a_write_on_another_peer_loses_neither(cluster) -> None:
    """Whatever the interleaving (chmod first, write first, or concurrent siblings that reads
    merge), the file ends with the new content and the new mode, and no conflict."""
    paths = [f"/race/f{i}" for i in range(20)]
    with cluster.client("p1") as client:
        for path in paths:
            client.put(path, b"v1", mode=0o644)
    with cluster.client("p2") as chmodder, cluster.client("p3") as writer:

        def race(path: str) -> None:
            barrier = threading.Barrier(2)

            def chmod() -> None:
                barrier.wait()
                chmodder.chmod(path, "0600")

            def write() -> None:
                barrier.wait()
                writer.put(path, b"v2 written during a chmod")

            threads = [threading.Thread(target=chmod), threading.Thread(target=write)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        for path in paths:
            race(path)
    for peer in PEERS:
        with cluster.client(peer) as client:
            for path in paths:
                assert client.get_bytes(path) == b"v2 written during a chmod"
                assert client.stat(path)["mode"] == "0600"
            listing = {e["name"]: e for e in client.ls("/race")}
            assert all(e["mode"] == "0600" and "conflict" not in e for e in listing.values())
