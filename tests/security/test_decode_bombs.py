"""Value-sharing CBOR bombs (tags 28/29) through each door of a real peer: the X-Qfs-Version
header, a gossip datagram and an RPC frame. Each is answered or dropped within 100 ms of the
peer's CPU, and the peer's /healthz keeps answering within 100 ms.

Before the bounded decoder a 200-byte bomb like these cost seconds of CPU and megabytes of
error text: cbor2 resolved the shared references and an error path repr()'d the result.
"""

from __future__ import annotations

import base64
import socket
import time

import cbor2
import httpx

from tests.security.conftest import (
    ADMIN,
    Target,
    cpu_seconds,
    framed,
    healthz_seconds,
    sealed,
)

LEVELS = 22  # 2**22 leaves once expanded: seconds of repr(), from ~150 bytes


def sharing_bomb(levels: int = LEVELS) -> list:
    """A DAG of lists in which every level holds the level below twice."""
    value: list = ["bomb"]
    for _ in range(levels):
        value = [value, value]
    return value


def assert_cheap(target: Target, started_cpu: float) -> None:
    spent = cpu_seconds(target.pid()) - started_cpu
    assert spent < 0.1, f"the peer spent {spent:.2f}s of CPU on a 200-byte input"
    assert healthz_seconds(target.url()) < 0.1


def test_a_bomb_in_the_version_header_is_refused_at_once(target: Target) -> None:
    clock = cbor2.dumps({"n": sharing_bomb()}, value_sharing=True)
    header = base64.urlsafe_b64encode(clock).rstrip(b"=").decode()
    assert len(header) < 300
    started = cpu_seconds(target.pid())
    response = httpx.put(
        target.url() + "/v1/files/bomb",
        content=b"x",
        headers={"Authorization": f"Bearer {ADMIN}", "X-Qfs-Version": header},
        timeout=30,
    )
    assert response.status_code == 400
    assert "tag" in response.json()["detail"]
    assert len(response.content) < 1000
    assert_cheap(target, started)


def test_a_bomb_in_a_gossip_datagram_is_dropped_at_once(target: Target) -> None:
    datagram = sealed(target.key, "gossip.gossip", {"from": "p2", "u": [[sharing_bomb()]]})
    assert len(datagram) < 400
    started = cpu_seconds(target.pid())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(datagram, ("127.0.0.1", target.rpc_port()))
    time.sleep(0.2)  # let the peer read it
    assert_cheap(target, started)


def test_a_bomb_in_an_rpc_frame_is_dropped_at_once(target: Target) -> None:
    item = ["f:/bomb", [{"n": sharing_bomb()}, b"v"], None]
    frame = framed(sealed(target.key, "record.put", {"id": 1, "args": {"items": [item]}}))
    assert len(frame) < 400
    started = cpu_seconds(target.pid())
    with socket.create_connection(("127.0.0.1", target.rpc_port()), timeout=10) as sock:
        sock.sendall(frame)
        reply = b""
        while chunk := sock.recv(65536):  # closed (the frame is refused), or a short error
            reply += chunk
            assert len(reply) < 4096
    assert_cheap(target, started)
