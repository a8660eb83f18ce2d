"""The pure membership state machine, driven by explicit time on a simulated network."""

from __future__ import annotations

import random

import pytest

from gossip.broadcasts import BroadcastQueue, retransmit_limit
from gossip.membership import (
    GOSSIP,
    PING,
    PUSH_PULL,
    Config,
    Membership,
    Send,
)
from gossip.sim import Simulation
from gossip.suspicion import Suspicion, suspicion_min_timeout, suspicion_timeout
from gossip.updates import ALIVE, DEAD, LEFT, SUSPECT, BadMessage, Meta
from gossip.wire import MAX_DATAGRAM, Codec, Message


def states(sim: Simulation, name: str) -> dict[str, str]:
    """How every up member (other than ``name``) sees member ``name``."""
    out = {}
    for i, m in enumerate(sim.members):
        if sim.up[i] and m.name != name:
            info = m.member(name)
            out[m.name] = info.state if info else "unknown"
    return out


def make(name: str = "a", now: float = 0.0, config: Config | None = None) -> Membership:
    meta = Meta(f"id-{name}", ("127.0.0.1", 7000 + ord(name[0])), ("127.0.0.1", 8000), 1)
    return Membership(name, meta, codec=Codec(), rng=random.Random(7), now=now, config=config)


def test_failed_member_is_suspected_then_dead_everywhere() -> None:
    sim = Simulation(8, seed=3)
    sim.run_until(3)
    sim.fail(5)
    sim.run_until(30)
    f = sim.failures[5]
    assert f.first_suspected is not None
    assert f.first_dead is not None and f.first_dead - f.first_suspected >= 4.0  # min timeout
    assert set(states(sim, "m5").values()) == {DEAD}
    assert sim.false_positives == []


def test_member_reachable_only_indirectly_stays_alive() -> None:
    sim = Simulation(6, seed=4)
    sim.cut(0, 1)
    sim.run_until(120)
    assert sim.false_suspicions == 0
    assert sim.false_positives == []
    assert states(sim, "m1")["m0"] == ALIVE
    assert states(sim, "m0")["m1"] == ALIVE


def test_suspected_live_member_refutes_and_stays_alive() -> None:
    sim = Simulation(8, seed=5)
    sim.run_until(2)
    sim.partition([1 if i == 2 else 0 for i in range(8)])
    sim.run_until(4.5)  # long enough to be suspected, shorter than the suspicion timeout
    assert SUSPECT in states(sim, "m2").values()
    sim.heal()
    sim.run_until(40)
    assert set(states(sim, "m2").values()) == {ALIVE}
    assert sim.members[2].incarnation >= 1  # it refuted
    assert sim.false_positives == []


def test_refutation_raises_incarnation_past_the_claim() -> None:
    a = make("a")
    out = a.handle(Message(GOSSIP, {"from": "b", "u": [["s", "a", 0, "b"]]}), ("h", 1), 1.0)
    assert out == [] and a.incarnation == 1
    assert a.awareness.score == 1
    a.handle(Message(GOSSIP, {"from": "b", "u": [["d", "a", 5, "b"]]}), ("h", 1), 1.0)
    assert a.incarnation == 6
    # An old claim is already refuted and changes nothing.
    a.handle(Message(GOSSIP, {"from": "b", "u": [["s", "a", 3, "b"]]}), ("h", 1), 1.0)
    assert a.incarnation == 6


def test_incarnation_ordering() -> None:
    a = make("a")
    alive = ["a", "b", 2, "id-b", "h", 1, "h", 2, 1]

    def feed(*updates: list) -> str:
        a.handle(Message(GOSSIP, {"from": "c", "u": list(updates)}), ("h", 1), 1.0)
        return a.member("b").state  # type: ignore[union-attr]

    assert feed(alive) == ALIVE
    assert feed(["s", "b", 1, "c"]) == ALIVE  # older suspicion ignored
    assert feed(["s", "b", 2, "c"]) == SUSPECT  # same incarnation: suspect beats alive
    assert feed(alive) == SUSPECT  # same incarnation: alive does not clear it
    assert feed(["a", "b", 3, "id-b", "h", 1, "h", 2, 1]) == ALIVE  # refuted
    assert feed(["d", "b", 3, "c"]) == DEAD
    assert feed(["a", "b", 3, "id-b", "h", 1, "h", 2, 1]) == DEAD
    assert feed(["a", "b", 4, "id-b", "h", 1, "h", 2, 1]) == ALIVE  # came back


def test_slow_member_does_not_get_healthy_peers_declared_dead() -> None:
    sim = Simulation(10, seed=6)
    sim.run_until(2)
    sim.inbound_delay[0] = 1.2  # m0 hears everything late: its own probes time out
    scores = []
    for t in range(3, 120):
        sim.run_until(t)
        scores.append(sim.members[0].awareness.score)
    assert max(scores) >= 2  # local health made m0 distrust itself
    assert sim.false_positives == []


def test_dissemination_respects_retransmit_limit_and_datagram_bound() -> None:
    codec = Codec(b"k" * 32)  # with a MAC, the largest envelope
    a = Membership(
        "a" * 64,
        Meta("x" * 64, ("127.0.0.1", 1), ("127.0.0.1", 2), 1),
        codec=codec,
        rng=random.Random(1),
        now=0.0,
        config=Config(probe_interval=100, probe_timeout=90),
    )  # no probe fails here
    n = 120
    records = [
        [
            "a",
            f"member-{i:03d}-" + "n" * 53,
            0,
            "i" * 64,
            "127.0.0.1",
            10000 + i,
            "127.0.0.1",
            20000 + i,
            1,
        ]
        for i in range(n)
    ]
    a.handle_pushpull(Message(PUSH_PULL, {"from": records[0][1], "m": records}), 0.0)
    limit = retransmit_limit(a.config.retransmit_mult, a.cluster_size)
    sent: dict[str, int] = {}
    now = 0.0
    while now < 60:
        now += 0.05
        for e in a.tick(now):
            if isinstance(e, Send):
                data = codec.encode(e.type, e.body)
                assert len(data) <= e.size <= MAX_DATAGRAM
                for u in e.body["u"]:
                    if u[0] == "a":
                        sent[u[1]] = sent.get(u[1], 0) + 1
    assert len(sent) == n + 1  # every new member and ourselves
    assert set(sent.values()) == {limit}


def test_garbage_changes_nothing() -> None:
    a = make("a")
    a.handle(
        Message(GOSSIP, {"from": "b", "u": [["a", "b", 0, "id", "h", 1, "h", 2, 1]]}), ("h", 1), 0.0
    )
    before = (a.members(), a.incarnation, a.next_wakeup())
    bad = [
        Message("gossip.bogus", {"from": "b"}),
        Message(PING, {"from": "b", "seq": 1}),  # no target
        Message(PING, {"from": "b", "seq": -1, "to": "a"}),
        Message(PING, {"from": "b", "seq": True, "to": "a"}),
        Message(GOSSIP, {"from": 3}),
        Message(GOSSIP, {"from": "b", "u": "x"}),
        # a valid update followed by a bad one: nothing of the message is applied
        Message(GOSSIP, {"from": "b", "u": [["s", "b", 0, "c"], ["a", "b"]]}),
        Message(GOSSIP, {"from": "b", "u": [["d", "a", 9, "c"], ["z", "b", 1, "c"]]}),
        Message("gossip.pingreq", {"from": "b", "seq": 1}),  # no target
        # names and addresses that would reach a terminal or a connect() unchecked
        Message(GOSSIP, {"from": "b\x1b[2J"}),
        Message(GOSSIP, {"from": "b", "u": [["a", "c\x1b]0;x\x07", 0, "id", "h", 1, "h", 2, 1]]}),
        Message(GOSSIP, {"from": "b", "u": [["a", "c", 0, "id", "h\n", 1, "h", 2, 1]]}),
        Message(GOSSIP, {"from": "b", "u": [["a", "c", 0, "id", "h", 1, "-h", 2, 1]]}),
        Message(GOSSIP, {"from": "b", "u": [["a", "c", 0, "i d", "h", 1, "h", 2, 1]]}),
    ]
    for msg in bad:
        with pytest.raises(BadMessage):
            a.handle(msg, ("h", 1), 1.0)
    with pytest.raises(BadMessage):
        a.merge_pushpull_reply(Message(PUSH_PULL, {"from": "b", "m": [["a", "b"]]}), 1.0)
    assert (a.members(), a.incarnation, a.next_wakeup()) == before


def test_join_through_a_seed_converges() -> None:
    sim = Simulation(12, seed=8, bootstrap=False)
    for i in range(1, 12):
        sim.run_until(0.1 * i)
        sim.join(i, 0)
    sim.run_until(5)
    for m in sim.members:
        assert {x.name: x.state for x in m.members()} == {f"m{i}": ALIVE for i in range(12)}


def test_leave_is_seen_as_left_and_reaped() -> None:
    config = Config(reap_after=60)
    sim = Simulation(8, seed=9, config=config)
    sim.run_until(3)
    sim.leave(4)
    assert sim.members[4].members()[0].state == LEFT
    sim.run_until(6)
    assert sim.members[4].leave_done
    sim.fail(4)  # the process exits
    sim.run_until(20)
    assert set(states(sim, "m4").values()) == {LEFT}
    assert sim.false_positives == []
    sim.run_until(90)
    assert set(states(sim, "m4").values()) == {"unknown"}  # reaped


def test_partition_healed_by_push_pull() -> None:
    config = Config(pushpull_interval=10)
    sim = Simulation(10, seed=10, config=config)
    sim.run_until(2)
    sim.partition([i % 2 for i in range(10)])
    sim.run_until(60)
    assert set(states(sim, "m1").values()) == {ALIVE, DEAD}  # each side lost the other
    sim.heal()
    sim.run_until(120)
    for i in range(10):
        assert set(states(sim, f"m{i}").values()) == {ALIVE}, i


def test_wakeups_are_always_in_the_future_after_tick() -> None:
    a = make("a")
    now = 0.0
    for _ in range(50):
        now = max(now, a.next_wakeup())
        a.tick(now)
        assert a.next_wakeup() > now


def test_suspicion_timeout_shrinks_with_confirmations() -> None:
    min_t = suspicion_min_timeout(4, 10, 1.0)
    assert min_t == pytest.approx(4.0)  # 4 * log10(10) * 1 s
    assert suspicion_min_timeout(4, 5, 1.0) == pytest.approx(4.0)  # log10 floored at 1
    s = Suspicion("origin", 100.0, k=2, min_t=min_t, max_t=6 * min_t)
    assert s.deadline == pytest.approx(124.0)
    assert not s.confirm("origin")  # the accuser is no confirmation
    assert s.confirm("b") and s.deadline == pytest.approx(
        100 + suspicion_timeout(1, 2, min_t, 6 * min_t))
    assert not s.confirm("b")  # once per member
    assert s.confirm("c") and s.deadline == pytest.approx(104.0)
    assert not s.confirm("d")  # beyond k nothing changes


def test_broadcasts_go_least_sent_first_within_budget() -> None:
    q = BroadcastQueue()
    q.put("a", ["a"], 10)
    q.put("b", ["b"], 10)
    assert q.take(10, 3) == ([["b"]], 10)  # newest first among equals
    assert q.take(10, 3) == ([["a"]], 10)  # then the one sent less often
    q.put("a", ["a2"], 10)  # replaces the queued update about a, count reset
    assert q.take(100, 3) == ([["a2"], ["b"]], 20)
    assert q.take(100, 3) == ([["a2"], ["b"]], 20)
    assert q.take(100, 3) == ([["a2"]], 10)  # b reached the limit of 3
    assert len(q) == 0


def test_version_changes_with_everything_members_reports() -> None:
    a = make("a", config=Config(reap_after=10))
    versions = [a.version]

    def changed() -> bool:
        versions.append(a.version)
        return versions[-1] > versions[-2]

    def feed(*updates: list) -> None:
        a.handle(Message(GOSSIP, {"from": "c", "u": list(updates)}), ("h", 1), 1.0)

    a.bootstrap([("c", Meta("id-c", ("h", 3), ("h", 4), 1))], 0.0)
    assert changed()  # c known
    feed(["a", "b", 1, "id-b", "h", 1, "h", 2, 1])
    assert changed() and a.member("b").state == ALIVE  # type: ignore[union-attr]
    feed(["s", "b", 1, "c"])
    assert changed() and a.member("b").state == SUSPECT  # type: ignore[union-attr]
    feed(["s", "b", 1, "d"])  # a confirmation changes nothing members() reports
    feed(["s", "b", 0, "c"])  # nor does old news
    assert not changed()
    feed(["a", "b", 2, "id-b", "h", 1, "h", 2, 1])
    assert changed() and a.member("b").incarnation == 2  # type: ignore[union-attr]
    feed(["a", "b", 3, "id-b", "h", 1, "h", 5, 1])  # alive again, with a new HTTP address
    assert changed() and a.member("b").http == ("h", 5)  # type: ignore[union-attr]
    feed(["d", "b", 3, "c"])
    assert changed() and a.member("b").state == DEAD  # type: ignore[union-attr]
    feed(["s", "a", 0, "c"])  # refuted: our incarnation goes up
    assert changed() and a.members()[0].incarnation == 1
    a.tick(100.0)
    assert changed() and a.member("b") is None  # reaped
    a.leave(101.0)
    assert changed() and a.members()[0].state == LEFT


def test_version_ignores_last_heard() -> None:
    a = make("a")
    a.handle(Message(GOSSIP, {"from": "c", "u": [["a", "b", 1, "id-b", "h", 1, "h", 2, 1]]}),
             ("h", 1), 1.0)
    version = a.version
    a.handle(Message(PING, {"from": "b", "seq": 1, "to": "a", "u": []}), ("h", 1), 2.0)
    assert a.member("b").last_heard == 2.0  # type: ignore[union-attr]
    assert a.version == version


def test_members_never_change_without_a_version_change() -> None:
    sim = Simulation(6, seed=11, loss=0.05, config=Config(reap_after=20), bootstrap=False)
    for i in range(1, 6):
        sim.join(i, 0)

    def seen(m: Membership) -> tuple[int, list[tuple]]:
        return m.version, [(x.name, x.state, x.incarnation, x.addr, x.http, x.node_id, x.version)
                           for x in m.members()]

    last = [seen(m) for m in sim.members]
    changes = 0
    for step in range(1, 1201):
        t = step / 10
        if t == 20:
            sim.partition([0, 0, 0, 1, 1, 1])
        elif t == 40:
            sim.heal()
        elif t == 60:
            sim.leave(5)
        elif t == 65:
            sim.fail(5)
        sim.run_until(t)
        for i, m in enumerate(sim.members):
            now = seen(m)
            assert now[0] >= last[i][0]
            if now[1] != last[i][1]:
                assert now[0] > last[i][0], (t, m.name)
                changes += 1
            last[i] = now
    assert changes > 20
    assert all(len(m.members()) == 5 for m in sim.members[:5])  # the leaver was reaped


def test_a_member_back_after_leaving_is_told_so_and_seen_alive_at_once() -> None:
    """Before: m2 left, m1 restarted (so it knew nothing of m2) and m2 came back through m1
    alone. m1 took it for alive at incarnation 0, m0 still held it as left at 1 and never
    said so to it, so m0 saw it alive only after a periodic push-pull (15-45 s; an hour soak
    timed out waiting 30 s)."""
    sim = Simulation(3, seed=5)
    sim.run_until(5)
    sim.leave(2)
    sim.run_until(6)
    sim.fail(2)  # the process exits once its leave is out
    sim.run_until(60)  # past gossip-to-the-dead: nobody sends to m2 any more
    assert sim.members[0].member("m2").state == LEFT  # type: ignore[union-attr]
    sim.restart(1)
    sim.join(1, 0)
    sim.run_until(65)
    assert sim.members[1].member("m2") is None  # m1 never heard of m2
    sim.restart(2)
    sim.join(2, 1)  # through the one member that knows nothing of its leave
    sim.run_until(70)
    for observer in (0, 1):
        seen = sim.members[observer].member("m2")
        assert seen is not None and seen.state == ALIVE, (observer, seen)
