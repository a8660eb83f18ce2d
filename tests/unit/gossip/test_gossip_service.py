"""GossipService on a fake reactor: one task.Clock, in-memory UDP and TCP, the real Codec."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim

from gossip.crypto import DatagramSealer, Keyring, key_id, new_key
from gossip.membership import PING, PUSH_PULL, Config, MemberChanged
from gossip.service import GossipService
from gossip.transport import StreamServer
from gossip.wire import Codec, Message, WireError

Addr = tuple[str, int]
KEY = b"cluster key for the unit tests!!"


class FakeNet:
    """Delivers datagrams after 1 ms of fake time; TCP connections complete at once."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.udp: dict[Addr, Any] = {}
        self.services: dict[Addr, GossipService] = {}
        self.sides: dict[int, int] = {}  # port -> partition side; empty = no partition

    def reachable(self, src: Addr, dst: Addr) -> bool:
        return self.sides.get(src[1], 0) == self.sides.get(dst[1], 0)

    def reactor(self) -> FakeReactor:
        return FakeReactor(self)

    def add(
        self, name: str, port: int, seeds: list[Addr] = (), codec: Codec | None = None, **kw: Any
    ) -> GossipService:
        s = GossipService(
            name,
            f"id-{name}",
            "127.0.0.1",
            port,
            ("127.0.0.1", 9000 + port),
            seeds,
            codec=codec or Codec(KEY),
            reactor=self.reactor(),
            rng=random.Random(port),
            **kw,
        )
        self.services[("127.0.0.1", port)] = s
        return s


class FakePort:
    def __init__(self, net: FakeNet, addr: Addr, protocol: Any) -> None:
        self.net, self.addr, self.protocol = net, addr, protocol

    def write(self, data: bytes, addr: Addr) -> None:
        target = self.net.udp.get(tuple(addr))
        if target is not None and self.net.reachable(self.addr, addr):
            self.net.clock.callLater(0.001, target.datagramReceived, data, self.addr)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.addr)

    def stopListening(self) -> None:
        self.net.udp.pop(self.addr, None)


class FakeReactor:
    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.addr: Addr = ("", 0)
        self.seconds = net.clock.seconds
        self.callLater = net.clock.callLater

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        addr = self.addr = (interface, port)
        self.net.udp[addr] = protocol
        return FakePort(self.net, addr, protocol)

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
    ) -> None:
        service = self.net.services.get((host, port))
        reachable = self.net.reachable(self.addr, (host, port))
        if service is None or not service.running or not reachable:
            raise ConnectionRefusedError(host, port)
        server = StreamServer(service.codec, service.handle_stream_message, self.net.clock)
        client = factory.buildProtocol(IPv4Address("TCP", host, port))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
        )
        pump.flush()


def states(service: GossipService) -> dict[str, str]:
    return {m.name: m.state for m in service.members()}


def run(net: FakeNet, seconds: float, step: float = 0.01) -> None:
    net.clock.pump([step] * int(seconds / step))


@pytest.fixture
def cluster() -> tuple[FakeNet, list[GossipService]]:
    net = FakeNet()
    services = [net.add(f"n{i}", 7000 + i, [("127.0.0.1", 7000)]) for i in range(4)]
    for s in services:
        s.startService()
    run(net, 2)
    return net, services


def test_join_through_seed_and_events(cluster: tuple[FakeNet, list[GossipService]]) -> None:
    net, services = cluster
    for s in services:
        assert states(s) == {f"n{i}": "alive" for i in range(4)}
        assert s.joined.called
    events: list[MemberChanged] = []
    services[0].subscribe(events.append)
    late = net.add("late", 7100, [("127.0.0.1", 7001)])
    late.startService()
    run(net, 2)
    assert [(e.member.name, e.member.state, e.previous) for e in events] == [
        ("late", "alive", None)
    ]
    assert all(states(s)["late"] == "alive" for s in services)


def test_join_retries_until_a_seed_answers() -> None:
    net = FakeNet()
    joiner = net.add("j", 7200, [("127.0.0.1", 7201)], join_retry_interval=1.0)
    joiner.startService()
    run(net, 3)
    assert not joiner.joined.called and joiner.counters.pushpull_failures >= 2
    seed = net.add("s", 7201)
    seed.startService()
    run(net, 2)
    assert joiner.joined.called
    assert states(joiner) == {"j": "alive", "s": "alive"} == states(seed)


def test_a_joiner_exchanges_state_with_every_seed() -> None:
    """Before: it joined through the first seed that answered and knew only what that seed
    knew; peers started together could miss each other until a periodic push-pull (a 5-peer
    cluster of the durability tests took more than 30 s to converge)."""
    net = FakeNet()
    first = net.add("a", 7300)
    second = net.add("b", 7301)
    third = net.add("c", 7302, [("127.0.0.1", 7301)])
    for service in (first, second, third):
        service.startService()
    run(net, 2)  # a alone; b and c know each other
    joiner = net.add("j", 7303, [("127.0.0.1", 7300), ("127.0.0.1", 7301)])
    joiner.startService()
    run(net, 2)  # well before any periodic push-pull
    assert joiner.joined.called
    assert states(joiner) == {"a": "alive", "b": "alive", "c": "alive", "j": "alive"}


def test_failed_member_declared_dead(cluster: tuple[FakeNet, list[GossipService]]) -> None:
    net, services = cluster
    net.udp.pop(("127.0.0.1", 7003))  # crash: n3 hears and says nothing
    services[3].stopService()
    run(net, 20)
    for s in services[:3]:
        assert states(s)["n3"] == "dead"


def test_leave(cluster: tuple[FakeNet, list[GossipService]]) -> None:
    net, services = cluster
    done = services[2].leave()
    run(net, 3)
    assert done.called
    services[2].stopService()
    run(net, 10)
    for s in (services[0], services[1], services[3]):
        assert states(s)["n2"] == "left"


def test_garbage_and_wrong_key_datagrams_change_nothing(
    cluster: tuple[FakeNet, list[GossipService]],
) -> None:
    net, services = cluster
    target = services[1]
    protocol = net.udp[("127.0.0.1", 7001)]
    before = (target.members(), target.core.incarnation)
    sent = target.counters.datagrams_sent
    spoof = ["s", "n1", 5, "n0"]  # would force a refutation if it were believed
    bad = [
        b"",
        b"\x00garbage",
        b"Q\x01" + b"\x00" * 40,  # claims a MAC that is not there
        Codec(b"another cluster key, not ours!!!").encode(
            PING, {"seq": 1, "from": "n0", "to": "n1", "u": [spoof]}
        ),
        Codec().encode(PING, {"seq": 1, "from": "n0", "to": "n1", "u": [spoof]}),  # no MAC
        Codec(KEY).encode(PING, {"seq": 1, "from": "n0", "to": "n1", "u": [spoof, ["x"]]}),
        Codec(KEY).encode("gossip.nonsense", {"from": "n0"}),
    ]
    for data in bad:
        protocol.datagramReceived(data, ("127.0.0.1", 7000))
    assert target.counters.datagrams_dropped == len(bad)
    assert target.counters.datagrams_sent == sent  # nothing answered
    assert (target.members(), target.core.incarnation) == before


def test_stream_messages(cluster: tuple[FakeNet, list[GossipService]]) -> None:
    _, services = cluster
    s = services[0]
    with pytest.raises(WireError):
        s.handle_stream_message(Message("gossip.other", {}))
    with pytest.raises(WireError):
        s.handle_stream_message(Message(PUSH_PULL, {"from": "x", "m": [["a"]]}))
    reply = s.handle_stream_message(Message(PUSH_PULL, {"from": "x", "m": []}))
    assert reply.type == PUSH_PULL
    assert {r[1] for r in reply.body["m"]} == {"n0", "n1", "n2", "n3"}


def test_partition_healed_by_periodic_push_pull() -> None:
    net = FakeNet()
    config = Config(pushpull_interval=5)
    services = [net.add(f"p{i}", 7300 + i, [("127.0.0.1", 7300)], config=config) for i in range(4)]
    for s in services:
        s.startService()
    run(net, 2)
    net.sides = {7300: 0, 7301: 0, 7302: 1, 7303: 1}  # UDP and TCP cut between the halves
    run(net, 60)
    assert states(services[0])["p2"] == "dead"
    assert states(services[3])["p1"] == "dead"
    net.sides = {}
    run(net, 60)
    for s in services:
        assert set(states(s).values()) == {"alive"}, states(s)


def test_member_with_another_cluster_key_is_ignored(
        cluster: tuple[FakeNet, list[GossipService]]) -> None:
    net, services = cluster
    stranger = net.add("x", 7400, [("127.0.0.1", 7000)],
                       codec=Codec(b"another cluster key, not ours!!!"))
    stranger.startService()
    run(net, 5)
    assert not stranger.joined.called
    assert states(stranger) == {"x": "alive"}
    assert all("x" not in states(s) for s in services)


def sealed_cluster(keyring: Keyring, count: int = 3) -> tuple[FakeNet, list[GossipService]]:
    net = FakeNet()
    services = [
        net.add(f"n{i}", 7500 + i, [("127.0.0.1", 7500)], codec=Codec(),
                sealer=DatagramSealer(keyring, f"n{i}"))
        for i in range(count)
    ]
    for s in services:
        s.startService()
    run(net, 2)
    return net, services


def test_sealed_datagrams_keep_out_other_keys_and_plaintext() -> None:
    net, services = sealed_cluster(Keyring((new_key(),)))
    assert all(states(s) == {"n0": "alive", "n1": "alive", "n2": "alive"} for s in services)
    stranger = net.add("x", 7600, [("127.0.0.1", 7500)], codec=Codec(),
                       sealer=DatagramSealer(Keyring((new_key(),)), "x"))
    stranger.startService()
    run(net, 3)  # push-pull is not sealed here (TLS guards it in a peer): it joins ...
    dropped = services[0].counters.datagrams_dropped
    run(net, 10)  # ... but none of its datagrams opens, so the members it pings drop them
    assert services[0].counters.datagrams_dropped > dropped
    protocol = net.udp[("127.0.0.1", 7501)]
    before = services[1].counters.datagrams_dropped
    protocol.datagramReceived(Codec().encode(PING, {"seq": 1, "from": "n0", "to": "n1"}),
                              ("127.0.0.1", 7500))
    assert services[1].counters.datagrams_dropped == before + 1


def test_the_gossip_key_rotates_with_no_member_suspected() -> None:
    old, new = new_key(), new_key()
    net, services = sealed_cluster(Keyring((old,)))
    seen: list[MemberChanged] = []
    for s in services:
        s.subscribe(seen.append)
    for s in services:  # install
        assert s.sealer is not None
        s.sealer.keyring = s.sealer.keyring.add(new)
    run(net, 5)
    services[0].sealer.keyring = services[0].sealer.keyring.use(key_id(new).hex())  # type: ignore[union-attr]
    run(net, 10)  # one member seals with the new key, the others with the old
    for s in services[1:]:
        s.sealer.keyring = s.sealer.keyring.use(key_id(new).hex())  # type: ignore[union-attr]
    run(net, 5)
    for s in services:  # remove the old key everywhere
        s.sealer.keyring = s.sealer.keyring.remove(key_id(old).hex())  # type: ignore[union-attr]
    run(net, 10)
    assert [e for e in seen if e.member.state != "alive"] == []
    assert all(set(states(s).values()) == {"alive"} for s in services)
