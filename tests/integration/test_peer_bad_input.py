"""Hostile input at every boundary of real peers: clear errors, peers keep serving, data intact."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gossip.wire import Codec
from peer.client import launcher
from peer.client.launcher import PeerProcess
from tests.support import LocalCluster, free_port, running_cluster

FILES = {f"/keep/{i}": os.urandom(size) for i, size in enumerate([0, 10, 5000, 1_500_000])}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("keyed")
    key = root / "cluster.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)  # a key others may read is refused
    with running_cluster(root, 3, extra=["--cluster-key-file", str(key)]) as cluster:
        with cluster.client("p1") as client:
            for path, data in FILES.items():
                client.put(path, data)
        yield cluster


def assert_everything_intact(cluster: LocalCluster) -> None:
    for name in ("p1", "p2", "p3"):
        with cluster.client(name) as client:
            for path, data in FILES.items():
                assert client.get_bytes(path) == data


def metric(cluster: LocalCluster, name: str, peer: str = "p1") -> float:
    text = httpx.get(cluster.peer(peer).http_url + "/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/v1/files/a/../b", "'..'"),
        ("/v1/files/a/%2e%2e/b", "'..'"),
        ("/v1/files/a%00b", "control character"),
        ("/v1/files/a//b", "empty name"),
        ("/v1/files/%ff%fe", "UTF-8"),
        ("/v1/files/" + "x" * 300, "longer than"),
        ("/v1/files/" + "a/" * 2100 + "z", "longer than"),
    ],
)
def test_bad_paths_get_400_with_a_json_reason(keyed, raw_path: str, reason: str) -> None:
    port = int(keyed.peer("p1").http_url.rsplit(":", 1)[1])
    for method in ("GET", "PUT", "DELETE"):
        # http.client sends the path as given; httpx would resolve the dot segments first
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request(method, raw_path, body=b"x")
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        assert response.status == 400, (method, raw_path, payload)
        body = json.loads(payload)
        assert body["error"] == "bad_request"
        assert reason in body["detail"]


def test_bad_query_and_version_arguments_get_400(keyed) -> None:
    url = keyed.peer("p2").http_url
    cases = [
        ("PUT", "/v1/files/q?w=9", {}, "w=9"),
        ("GET", "/v1/files/keep/1?r=0", {}, "r=0"),
        ("GET", "/v1/files/keep/1?r=abc", {}, "r"),
        ("PUT", "/v1/files/q?mode=999", {}, "mode"),
        ("PUT", "/v1/files/q", {"X-Qfs-Version": "not-a-version!"}, "X-Qfs-Version"),
    ]
    for method, path, headers, reason in cases:
        response = httpx.request(method, url + path, headers=headers, content=b"x", timeout=10)
        assert response.status_code == 400, (path, response.text)
        assert reason in response.json()["detail"]
    assert httpx.post(url + "/v1/files/keep/1", timeout=10).status_code == 405
    assert httpx.get(url + "/v2/nothing", timeout=10).status_code == 404


def test_oversized_and_garbage_http_requests_are_refused(keyed) -> None:
    port = int(keyed.peer("p1").http_url.rsplit(":", 1)[1])
    requests = [
        b"GET /v1/cluster HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /v1/cluster HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 600 + b"\r\n",
        b"\x00\xff garbage that is not HTTP\r\n\r\n",
        b"PUT /v1/files/trunc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
    ]
    for request in requests:
        answer = b""
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            contextlib.suppress(OSError),  # the peer may close first: a refusal too
        ):
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                answer += chunk
        assert not answer.startswith(b"HTTP/1.1 2"), answer[:100]
    assert_everything_intact(keyed)


def test_garbage_on_the_rpc_port_and_gossip_port_changes_nothing(keyed) -> None:
    port = keyed.ports["p2"][0]
    rng = random.Random(4)
    before_frames = metric(keyed, "qfs_rpc_bad_frames_total", "p2")
    before_datagrams = metric(keyed, "qfs_gossip_dropped_datagrams_total", "p2")
    plain = Codec()
    wrong_key = Codec(b"w" * 32)
    payloads = [
        rng.randbytes(200),
        struct.pack(">I", 2**31) + b"x" * 10,  # oversized length prefix
        wrong_key.frame("record.put", {"id": 1, "args": {"items": []}}),
        plain.frame("block.put", {"id": 1, "args": {"hash": "0" * 64, "data": b"x"}}),
        struct.pack(">I", 50) + b"truncated",
    ]
    for payload in payloads:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            contextlib.suppress(OSError),  # the peer may drop the connection first
        ):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(50):
            udp.sendto(rng.randbytes(rng.randrange(1, 1400)), ("127.0.0.1", port))
        udp.sendto(wrong_key.encode("gossip.ping", {"seq": 1}), ("127.0.0.1", port))
    assert metric(keyed, "qfs_rpc_bad_frames_total", "p2") >= before_frames + 3
    assert_everything_intact(keyed)
    assert metric(keyed, "qfs_gossip_dropped_datagrams_total", "p2") >= before_datagrams + 40


def test_a_peer_with_another_cluster_key_cannot_join_or_write(keyed, tmp_path: Path) -> None:
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"a different secret of enough length")
    other_key.chmod(0o600)
    port, http = free_port(), free_port()
    argv = launcher.peer_argv(
        "intruder",
        tmp_path / "intruder",
        port,
        http,
        join=[keyed.ports["p1"][0]],
        extra=["--cluster-key-file", str(other_key)],
    )
    intruder = PeerProcess("intruder", argv, f"http://127.0.0.1:{http}")
    launcher.start(intruder, log_dir=tmp_path)
    try:
        launcher.wait_converged([intruder], timeout=20)  # it sees itself, nobody else
        time.sleep(3)  # a negative needs a window: several probe periods and join attempts
        members = httpx.get(intruder.http_url + "/v1/cluster", timeout=5).json()["members"]
        assert [m["name"] for m in members if m["state"] == "alive"] == ["intruder"]
        for name in ("p1", "p2", "p3"):
            seen = httpx.get(keyed.peer(name).http_url + "/v1/cluster", timeout=5).json()
            assert "intruder" not in [m["name"] for m in seen["members"]]
    finally:
        launcher.stop([intruder])
    assert_everything_intact(keyed)
