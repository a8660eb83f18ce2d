"""A simulated network of real replicas (real record stores, memory block stores) for
deterministic tests of the coordinator and the background jobs: every call is encoded and
decoded by the real wire codec, a peer can be cut off, and storage calls run inline, so no
reactor is needed and every await completes at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import defer

from gossip.membership import MemberInfo
from gossip.wire import Codec
from peer.cluster import ClusterView
from peer.coordinator import Coordinator, QuorumSettings
from peer.replica import Replica
from peer.rpc import Handler, RpcError
from storage.blocks import MemoryBlockStore
from storage.records import RecordStore

BLOCK = 4096


def inline(f, *args):
    return defer.maybeDeferred(f, *args)


def run(coroutine):
    """Drive a coroutine whose awaits all complete synchronously; return its result."""
    result = defer.ensureDeferred(coroutine)
    assert result.called, "the simulated network should never leave a call pending"
    outcome = []
    result.addBoth(outcome.append)
    value = outcome[0]
    if isinstance(value, defer.Failure):
        value.raiseException()
    return value


@dataclass
class SimNetwork:
    """Peers by node id; `down` peers are cut off (calls to them fail as unreachable)."""

    codec: Codec = field(default_factory=Codec)
    replicas: dict[str, Replica] = field(default_factory=dict)
    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)  # node id -> name (default: the id)
    calls: list[tuple[str, str]] = field(default_factory=list)
    add_peer: Callable[[str], Coordinator] | None = None

    def members(self) -> list[MemberInfo]:
        return [
            MemberInfo(
                self.names.get(node, node),
                node,
                state,
                1,
                ("127.0.0.1", 1),
                ("127.0.0.1", 2),
                1,
                0.0,
            )
            for node, state in self.states.items()
        ]

    def kill(self, node: str) -> None:
        self.down.add(node)
        self.states[node] = "dead"

    def revive(self, node: str) -> None:
        self.down.discard(node)
        self.states[node] = "alive"

    def client(self, node: str) -> SimClient:
        return SimClient(self, node)


@dataclass
class SimClient:
    network: SimNetwork
    node: str

    async def call(self, method: str, args: dict, timeout: float = 0) -> dict:
        net = self.network
        net.calls.append((self.node, method))
        if self.node in net.down:
            raise RpcError("unreachable", f"{self.node} is cut off")
        request = net.codec.decode(net.codec.encode(method, args))
        reply = await net.handlers[self.node][method](request)
        return net.codec.decode(net.codec.encode("reply", reply)).body


SIM_TIME = 1000.0  # the simulated clock's "now"; members were last heard at 0


def sim_cluster(tmp_path: Path):
    """A fixture body: yields build(size, n, r, w, dead_after, wall) -> (network, coordinators)
    and closes every store afterwards (`wall` dates the blocks). `network.add_peer` adds a peer
    to a built cluster."""
    stores: list[RecordStore] = []

    def build(
        size: int,
        n: int = 3,
        r: int = 2,
        w: int = 2,
        dead_after: float = float("inf"),
        wall: Callable[[], float] = time.time,
    ):
        network = SimNetwork()
        coordinators: dict[str, Coordinator] = {}

        def add_peer(node: str) -> Coordinator:
            records = RecordStore(tmp_path / f"{node}.sqlite")
            stores.append(records)
            network.replicas[node] = Replica(MemoryBlockStore(wall), records, inline)
            network.handlers[node] = network.replicas[node].handlers()
            network.states[node] = "alive"
            coordinators[node] = Coordinator(
                ClusterView(node, network.members, lambda: SIM_TIME, dead_after),
                QuorumSettings(n, r, w, BLOCK),
                network.replicas[node],
                network.client,
                node,
                clock=lambda: SIM_TIME,
            )
            return coordinators[node]

        network.add_peer = add_peer
        for i in range(size):
            add_peer(f"n{i}")
        return network, coordinators

    yield build
    for store in stores:
        store.close()
