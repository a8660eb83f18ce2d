"""Helpers of the TUI tests: a real cluster of peers on 127.0.0.1, and waiting in Pilot."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from peer.client.api_client import Client
from peer.client.launcher import PeerProcess, peer_argv, start, stop, wait_converged
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free for both TCP and UDP right now (gossip uses UDP, RPC TCP on
    the same port)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class Cluster:
    """Three running peers and a client of each."""

    peers: list[PeerProcess]

    def client(self, index: int = 0) -> Client:
        return Client(self.peers[index].http_url, timeout=10.0)


def start_cluster(tmp: Path, count: int = 3) -> Cluster:
    """Start ``count`` peers joined through the first; wait until they all see each other."""
    ports = free_ports(2 * count)
    peers = []
    for i in range(count):
        port, http = ports[2 * i], ports[2 * i + 1]
        join = [ports[0]] if i else []
        argv = peer_argv(f"p{i + 1}", tmp / f"p{i + 1}", port, http, join=join)
        peers.append(PeerProcess(f"p{i + 1}", argv, f"http://127.0.0.1:{http}"))
    cluster = Cluster(peers)
    try:
        for peer in peers:
            start(peer, tmp / "logs", cwd=ROOT)
        wait_converged(peers, timeout=30)
    except BaseException:
        stop(peers)
        raise
    return cluster


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 15.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await pilot.pause(0.05)
