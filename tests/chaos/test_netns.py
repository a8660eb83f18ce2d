"""The namespace network itself: a partition blocks traffic both ways, a one-way loss only one
way, random loss drops a share, healing restores everything, and no namespace outlives its run,
also when the run fails. Real namespaces, real sockets (a thread moved into each namespace)."""

from __future__ import annotations

import socket

import pytest

from tests.chaos import netns
from tests.chaos.netns import Network

pytestmark = pytest.mark.skipif(
    not netns.available(), reason="network namespaces need root, ip and nft (nftables)"
)
PROBE_PORT = 9999


class Probe:
    """A UDP listener and a TCP listener on each host, and senders from each host."""

    def __init__(self, net: Network, hosts: list[str]) -> None:
        self.net = net
        self.udp: dict[str, socket.socket] = {}
        self.tcp: dict[str, socket.socket] = {}
        for host in hosts:
            with net.inside(host):
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind((net.address(host), PROBE_PORT))
                udp.settimeout(0.3)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.bind((net.address(host), PROBE_PORT))
                tcp.listen(64)
            self.udp[host], self.tcp[host] = udp, tcp

    def close(self) -> None:
        for sock in [*self.udp.values(), *self.tcp.values()]:
            sock.close()

    def udp_delivered(self, sender: str, receiver: str, count: int = 1) -> int:
        """How many of `count` datagrams from `sender` reach `receiver`."""
        with self.net.inside(sender):
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with out:
            for i in range(count):
                out.sendto(f"{sender}:{i}".encode(), (self.net.address(receiver), PROBE_PORT))
        got = 0
        listener = self.udp[receiver]
        while True:
            try:
                data, _ = listener.recvfrom(100)
            except TimeoutError:
                return got
            got += data.startswith(f"{sender}:".encode())

    def tcp_connects(self, sender: str, receiver: str) -> bool:
        """Whether `sender` can open a TCP connection to `receiver`."""
        with self.net.inside(sender):
            out = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with out:
            out.settimeout(0.5)
            try:
                out.connect((self.net.address(receiver), PROBE_PORT))
            except OSError:
                return False
            self.tcp[receiver].accept()[0].close()
            return True

    def reach(self, sender: str, receiver: str) -> tuple[bool, bool]:
        """(UDP delivered, TCP connected) from `sender` to `receiver`."""
        return self.udp_delivered(sender, receiver) == 1, self.tcp_connects(sender, receiver)


@pytest.fixture
def lab():
    with Network() as net:
        for host in ("p1", "p2", "p3"):
            net.add_host(host)
        probe = Probe(net, ["client", "p1", "p2", "p3"])
        try:
            yield net, probe
        finally:
            probe.close()


def test_a_partition_blocks_both_ways_and_healing_restores(lab) -> None:
    net, probe = lab
    for a, b in [("p1", "p2"), ("p2", "p1"), ("p1", "p3"), ("client", "p3")]:
        assert probe.reach(a, b) == (True, True), (a, b)
    net.partition(["p1"], ["p2", "p3"])
    for a, b in [("p1", "p2"), ("p2", "p1"), ("p1", "p3"), ("p3", "p1")]:
        assert probe.reach(a, b) == (False, False), (a, b)
    for a, b in [("p2", "p3"), ("p3", "p2"), ("client", "p1"), ("p1", "client")]:
        assert probe.reach(a, b) == (True, True), (a, b)
    net.heal()
    for a, b in [("p1", "p2"), ("p2", "p1"), ("p3", "p1")]:
        assert probe.reach(a, b) == (True, True), (a, b)


def test_a_one_way_loss_blocks_only_one_way(lab) -> None:
    net, probe = lab
    net.drop("p1", "p2")  # p2 no longer hears p1; p1 still hears p2
    assert probe.udp_delivered("p1", "p2") == 0
    assert probe.udp_delivered("p2", "p1") == 1
    # TCP needs both directions: the handshake fails whoever starts it.
    assert not probe.tcp_connects("p1", "p2")
    assert not probe.tcp_connects("p2", "p1")
    assert probe.reach("p1", "p3") == (True, True)
    net.heal()
    assert probe.reach("p1", "p2") == (True, True)


def test_random_loss_drops_a_share_and_a_downed_link_everything(lab) -> None:
    net, probe = lab
    net.drop("p1", "p2", 50)
    got = probe.udp_delivered("p1", "p2", 400)
    assert 100 < got < 300, got  # 50% of 400: far outside these bounds is ~10^-20 likely
    assert probe.udp_delivered("p2", "p1", 50) == 50
    net.link("p3", up=False)
    assert probe.reach("client", "p3") == (False, False)
    net.heal()
    assert probe.udp_delivered("p1", "p2", 50) == 50
    assert probe.reach("client", "p3") == (True, True)


def test_every_namespace_is_gone_after_the_run() -> None:
    with Network() as net:
        net.add_host("p1")
        mine = set(netns.namespaces()) & {net.ns(h) for h in ("br", "client", "p1")}
        assert len(mine) == 3
    assert not [n for n in netns.namespaces() if n.startswith(net.prefix)]


def test_every_namespace_is_gone_after_a_failed_run() -> None:
    prefix = ""
    with pytest.raises(RuntimeError, match="the run failed"), Network() as net:
        prefix = net.prefix
        net.add_host("p1")
        net.partition(["p1"], ["client"])
        raise RuntimeError("the run failed")
    assert prefix and not [n for n in netns.namespaces() if n.startswith(prefix)]


def test_leftovers_of_a_dead_run_are_swept_and_a_live_runs_kept() -> None:
    dead = f"{netns.RUN_PREFIX}-{2**22 + 12345}-abcdef-p1"  # above pid_max: no such process
    netns._ip("netns", "add", dead)
    with Network() as live:
        assert dead not in netns.namespaces()  # entering a run sweeps the dead ones
        assert netns.sweep() == []  # and never a live run's
        assert live.ns("br") in netns.namespaces()
