"""Forged gossip against the membership core: ping-reqs aim only at members, at their known
addresses; relay state stays bounded; a ping from a stranger gets a bare ack."""

from __future__ import annotations

import random

from gossip.membership import ACK, MAX_RELAYS, NACK, PING, PING_REQ, Membership, Send
from gossip.updates import Meta
from gossip.wire import Codec, Message

MEMBERS = {"b": ("10.0.0.2", 7002), "c": ("10.0.0.3", 7003)}
OUTSIDE = ("198.51.100.7", 53)  # a victim's address, forged as the datagram's source


def member_a() -> Membership:
    a = Membership(
        "a",
        Meta("id-a", ("10.0.0.1", 7001), ("10.0.0.1", 8001), 1),
        codec=Codec(),
        rng=random.Random(3),
        now=0.0,
    )
    a.bootstrap(
        [(name, Meta(f"id-{name}", addr, (addr[0], 8000), 1)) for name, addr in MEMBERS.items()],
        0.0,
    )
    return a


def msg(kind: str, body: dict) -> Message:
    return Message(kind, {"u": [], **body})


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def test_a_ping_req_pings_the_known_address_and_answers_the_requester_there() -> None:
    a = member_a()
    # Forged source; an old-style "ta" naming an outside address is ignored.
    message = msg(PING_REQ, {"from": "b", "seq": 5, "to": "c", "ta": list(OUTSIDE)})
    (ping,) = sends(a.handle(message, OUTSIDE, 0.1))
    assert (ping.addr, ping.type) == (MEMBERS["c"], PING)
    ack = msg(ACK, {"from": "c", "seq": ping.body["seq"]})
    (forward,) = sends(a.handle(ack, MEMBERS["c"], 0.2))
    assert (forward.addr, forward.type, forward.body["seq"]) == (MEMBERS["b"], ACK, 5)


def test_a_silent_target_is_nacked_to_the_requester_s_known_address() -> None:
    a = member_a()
    a.handle(msg(PING_REQ, {"from": "b", "seq": 5, "to": "c"}), OUTSIDE, 0.1)
    (nack,) = [s for s in sends(a.tick(0.1 + a.config.probe_timeout)) if s.type == NACK]
    assert nack.addr == MEMBERS["b"]


def test_ping_reqs_from_strangers_or_about_strangers_reach_no_outsider() -> None:
    a = member_a()
    stranger = msg(PING_REQ, {"from": "x", "seq": 1, "to": "c"})
    assert sends(a.handle(stranger, OUTSIDE, 0.1)) == []
    (nack,) = sends(a.handle(msg(PING_REQ, {"from": "b", "seq": 2, "to": "x"}), OUTSIDE, 0.1))
    assert (nack.addr, nack.type) == (MEMBERS["b"], NACK)


def test_a_ping_req_flood_keeps_relays_bounded_and_packets_inside_the_membership() -> None:
    a = member_a()
    out = []
    for seq in range(10_000):
        request = msg(PING_REQ, {"from": "b", "seq": seq, "to": "c"})
        out += sends(a.handle(request, OUTSIDE, 0.1))
    assert len(out) == MAX_RELAYS
    out += sends(a.tick(0.1 + a.config.probe_timeout))
    assert {s.addr for s in out} <= set(MEMBERS.values())
    a.tick(0.1 + a.config.probe_interval)  # every relay expired: room again
    assert sends(a.handle(msg(PING_REQ, {"from": "b", "seq": 1, "to": "c"}), OUTSIDE, 2.0))


def test_a_ping_from_a_stranger_gets_a_bare_ack_no_bigger_than_the_ping() -> None:
    a = member_a()
    a.handle(
        msg("gossip.gossip", {"from": "b", "u": [["s", "c", 0, "b"]]}), MEMBERS["b"], 0.0
    )  # something queued to piggyback
    ping = msg(PING, {"from": "x", "seq": 9, "to": "a"})
    (ack,) = sends(a.handle(ping, OUTSIDE, 0.1))
    assert ack.addr == OUTSIDE and ack.body["u"] == []
    codec = Codec()
    assert len(codec.encode(ack.type, ack.body)) <= len(codec.encode(ping.type, ping.body))
    (known,) = sends(a.handle(msg(PING, {"from": "b", "seq": 9, "to": "a"}), OUTSIDE, 0.2))
    assert known.addr == MEMBERS["b"] and known.body["u"]
