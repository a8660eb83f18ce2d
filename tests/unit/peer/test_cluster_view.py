"""ClusterView: who is up, and when a dead peer's share moves to new homes."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from gossip.membership import MemberInfo
from gossip.service import GossipService
from gossip.wire import Codec
from peer.cluster import ClusterView


def member(name: str, state: str, heard: float | None = None) -> MemberInfo:
    return MemberInfo(name, name, state, 1, ("127.0.0.1", 1), ("127.0.0.1", 2), 1, heard)


class Members:
    """A membership source that counts its reads, with a version raised by ``set``."""

    def __init__(self, **states: str) -> None:
        self.states = states
        self.version = 0
        self.reads = 0

    def set(self, name: str, state: str) -> None:
        self.states[name] = state
        self.version += 1

    def __call__(self) -> list[MemberInfo]:
        self.reads += 1
        return [member(n, s) for n, s in self.states.items()]


@pytest.mark.parametrize("versioned", [False, True])
def test_a_dead_peer_leaves_the_ring_after_dead_after_and_returns_when_alive(
    versioned: bool,
) -> None:
    now = [100.0]
    source = Members(a="alive", b="alive", c="dead")
    view = ClusterView(
        "a", source, lambda: now[0], dead_after=30,
        version=(lambda: source.version) if versioned else None,
    )
    assert view.ring().members == {"a", "b", "c"}
    assert not view.is_up("c")
    now[0] += 29
    assert "c" in view.ring().members
    now[0] += 2
    assert view.ring().members == {"a", "b"}  # with no version change too
    source.set("c", "alive")
    assert view.ring().members == {"a", "b", "c"}
    source.set("c", "dead")
    assert "c" in view.ring().members  # dead again: the clock starts over


def test_left_peers_are_off_the_ring_and_suspects_are_up() -> None:
    view = ClusterView(
        "a", lambda: [member("a", "alive"), member("b", "left"), member("c", "suspect")]
    )
    assert view.ring().members == {"a", "c"}
    assert view.is_up("c") and not view.is_up("b") and view.is_up("a")
    assert view.name_of("zzz") == "zzz"


def test_without_a_version_every_call_reads_the_source() -> None:
    source = Members(a="alive", b="alive")
    view = ClusterView("a", source)
    view.peers()
    view.ring()
    view.is_up("b")
    view.name_of("b")
    assert source.reads == 4


def test_with_a_version_the_source_is_read_once_per_version() -> None:
    source = Members(a="alive", b="alive")
    view = ClusterView("a", source, version=lambda: source.version)
    peers = view.peers()
    assert view.ring().members == {"a", "b"}
    assert view.is_up("b") and view.name_of("b") == "b"
    assert view.peers() is peers and source.reads == 1
    source.set("b", "dead")
    assert not view.is_up("b")  # seen at once
    assert view.peers() is not peers and source.reads == 2
    source.set("c", "suspect")
    assert view.ring().members == {"a", "b", "c"} and view.is_up("c")
    assert source.reads == 3


class UdpPort:
    def __init__(self, port: int) -> None:
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.port)

    def stopListening(self) -> None:
        pass


class Reactor(Clock):
    """Time from a task.Clock; each UDP listen gets the next port; no TCP peer answers."""

    def __init__(self) -> None:
        super().__init__()
        self.next_port = 7001

    def listenUDP(self, port: int, protocol: Any, **kw: Any) -> UdpPort:
        self.next_port += 1
        return UdpPort(self.next_port - 1)

    def connectTCP(self, *args: Any, **kw: Any) -> None:
        raise ConnectionRefusedError


def test_a_view_of_a_gossip_service_follows_its_start_and_restart() -> None:
    reactor = Reactor()
    service = GossipService("a", "id-a", "127.0.0.1", 0, ("127.0.0.1", 8000),
                            [("127.0.0.1", 1)], codec=Codec(), reactor=reactor)
    view = ClusterView("id-a", service.members, reactor.seconds,
                       version=service.members_version)
    assert view.peers() == {}  # not started yet
    service.startService()
    assert view.peers()["id-a"].addr == ("127.0.0.1", 7001)
    service.stopService()
    service.startService()  # a new membership core, starting over at its version 0
    assert view.peers()["id-a"].addr == ("127.0.0.1", 7002)
    service.stopService()
