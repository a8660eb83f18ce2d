"""Forged gossip datagrams against a real peer: a ping-req flood aims no packet outside the
membership, and a member name carrying terminal escapes never becomes a member."""

from __future__ import annotations

import socket
import time

import httpx

from gossip.wire import Codec
from tests.security.conftest import ADMIN, Target, healthz_seconds


def test_a_ping_req_flood_sends_nothing_outside_the_membership(target: Target) -> None:
    codec = Codec(target.key)  # an insider's key, or a leaked one: still no reflection
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind(("127.0.0.1", 0))
        victim.settimeout(0.5)
        outside = list(victim.getsockname())
        for seq in range(2000):
            body = {"from": "p2", "seq": seq, "to": "p3", "ta": outside, "u": []}
            # sent from the victim's socket: its address is the datagram's (forged) source
            victim.sendto(codec.encode("gossip.pingreq", body), ("127.0.0.1", target.rpc_port()))
        deadline = time.monotonic() + 1.5
        received = 0
        while time.monotonic() < deadline:
            try:
                victim.recv(2048)
                received += 1
            except TimeoutError:
                pass
    assert received == 0, f"{received} datagrams reached an address outside the membership"
    assert healthz_seconds(target.url()) < 0.1


def test_a_member_name_with_terminal_escapes_is_never_a_member(target: Target) -> None:
    codec = Codec(target.key)
    evil = "evil\x1b]0;pwned\x07\x1b[2J"
    alive = ["a", evil, 0, "id-evil", "127.0.0.1", 9, "127.0.0.1", 9, 1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for name in (evil, "p2"):  # as the sender, and as an update a member passes on
            body = {"from": name, "u": [alive]}
            udp.sendto(codec.encode("gossip.gossip", body), ("127.0.0.1", target.rpc_port()))
    time.sleep(0.5)
    members = httpx.get(
        target.url() + "/v1/cluster", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ).json()["members"]
    assert sorted(m["name"] for m in members) == ["p1", "p2", "p3"]
