"""A graceful leave hands the peer's share over first, so every key keeps N copies (issue 15's
durability, found by CI as a 404 after two graceful leaves): the plan, and leaves on the
simulated network with real replicas, anti-entropy and wire codec, and no anti-entropy round
run in between."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer

from peer.manifest import entry_key, manifest_key
from peer.repair.antientropy import AntiEntropy, placement_of
from peer.repair.departure import Departure, departure_plan
from peer.repair.handoff import HintedHandoff
from peer.ring import HashRing
from tests.simnet import inline, run, sim_cluster
from tests.unit.peer.repair.test_durability_sim import (
    Monotonic,
    files,
    holders,
    put,
    read,
    record_puts_fail,
    repair,
    start_jobs,
)

KEYS = [f"/k/{i}" for i in range(2000)]


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def test_the_plan_gives_each_key_the_leaver_was_a_home_of_to_its_one_new_home() -> None:
    ring = HashRing([f"n{i}" for i in range(5)])
    plan = departure_plan(((key, key) for key in KEYS), ring, "n4", 3)
    after = ring.without("n4")
    given = [(home, key) for home, keys in plan.items() for key in keys]
    assert "n4" not in plan
    for key in KEYS:
        before = ring.preference(key, 3)
        new = [home for home, k in given if k == key]
        if "n4" in before:
            assert len(new) == 1 and new[0] not in before
            assert set(after.preference(key, 3)) == set(before) - {"n4"} | set(new)
        else:
            assert new == []  # the ring without n4 gives it the same homes


def test_the_plan_of_a_peer_off_the_ring_is_empty() -> None:
    assert departure_plan(((key, key) for key in KEYS), HashRing(["a", "b", "c"]), "d", 3) == {}


def departure(network, coordinators, node: str, checked: bool = True) -> Departure:
    coordinator, replica = coordinators[node], network.replicas[node]
    ae = AntiEntropy(coordinator, replica, inline, lambda: 0.0)
    handoff = HintedHandoff(coordinator, replica.blocks, replica.records, inline)
    return Departure(coordinator, replica, ae, handoff, inline, lambda: 0.0, lambda: checked)


def leave(
    network, coordinators, node: str, before_heard=lambda: None, timeout: float = 20.0,
    checked: bool = True,
) -> Departure:
    """`node` leaves gracefully: hand-over, announcement (others see it left), hand-over;
    `before_heard` runs just before the others hear of it."""
    gone = departure(network, coordinators, node, checked)

    async def announce() -> None:
        before_heard()
        network.states[node] = "left"

    run(gone.leave(announce, timeout))
    network.down.add(node)
    return gone


def holds(network, node: str, item: str) -> bool:
    """Whether `node` holds `item`, a record key (`f:...`, `e:...`) or a block hash."""
    replica = network.replicas[node]
    return bool(replica.records.get(item)) if ":" in item else replica.blocks.has(item)


def copies(network, stay: list[str], items: list[str]) -> dict[str, int]:
    """How many of the peers in `stay` hold each record key or block of `items`."""
    return {item: sum(holds(network, node, item) for node in stay) for item in items}


def stored_items(network) -> list[str]:
    """Every record key and block any peer holds."""
    items: set[str] = set()
    for replica in network.replicas.values():
        items |= {key for key, _ in replica.records.range()} | set(replica.blocks.hashes())
    return sorted(items)


def write_files(coordinators, count: int, seed: int) -> dict[str, bytes]:
    written = files(count, seed)
    for path, data in written.items():
        put(coordinators["n0"], path, data)
    return written


def test_two_homes_leaving_one_after_the_other_keep_n_copies_and_every_file(cluster) -> None:
    """Before: a leaving peer handed nothing over; the keys both leavers were homes of were
    left on one peer, and reads answered by the two new homes said 404."""
    network, coordinators = cluster(5)
    written = write_files(coordinators, 24, seed=3)
    items = stored_items(network)
    leave(network, coordinators, "n4")
    leave(network, coordinators, "n3")
    stay = ["n0", "n1", "n2"]
    assert set(copies(network, stay, items).values()) == {3}
    for node in stay:
        for path, data in written.items():
            assert read(coordinators[node], path) == data


def test_what_a_new_home_dropped_before_it_heard_of_the_leave_is_handed_over_again(
    cluster,
) -> None:
    network, coordinators = cluster(4)
    put(coordinators["n0"], "/f", b"x" * 5000)
    key = manifest_key("/f")
    homes = coordinators["n0"].homes("/f")
    leaver = homes[0]
    new_home = coordinators["n0"].cluster.ring().without(leaver).preference("/f", 3)
    (new_home,) = set(new_home) - set(homes)

    def dropped_as_an_orphan() -> None:  # what the new home's anti-entropy may do meanwhile
        assert network.replicas[new_home].records.get(key)
        network.replicas[new_home].records.delete(key)

    leave(network, coordinators, leaver, before_heard=dropped_as_an_orphan)
    assert network.replicas[new_home].records.get(key)


def test_a_peer_whose_data_is_not_checked_hands_nothing_over(cluster) -> None:
    network, coordinators = cluster(4)
    put(coordinators["n0"], "/f", b"y" * 5000)
    leaver = coordinators["n0"].homes("/f")[0]
    gone = leave(network, coordinators, leaver, checked=False)
    assert (gone.handed_over.records, gone.handed_over.blocks) == (0, 0)
    assert network.states[leaver] == "left"  # announced all the same


def test_a_hand_over_past_its_deadline_stops_and_the_leave_is_announced(cluster) -> None:
    network, coordinators = cluster(4)
    put(coordinators["n0"], "/f", b"z" * 5000)
    leaver = coordinators["n0"].homes("/f")[0]
    gone = leave(network, coordinators, leaver, timeout=0.0)
    assert (gone.handed_over.records, gone.handed_over.blocks) == (0, 0)
    assert network.states[leaver] == "left"


def test_a_new_home_that_is_down_is_skipped_and_the_others_still_get_theirs(cluster) -> None:
    network, coordinators = cluster(5)
    write_files(coordinators, 24, seed=4)
    items = stored_items(network)
    ring = coordinators["n0"].cluster.ring()
    after = ring.without("n4")
    network.down.add("n1")  # unreachable, still a member: calls to it fail
    leave(network, coordinators, "n4")
    stay = ["n0", "n1", "n2", "n3"]
    for item, held in copies(network, stay, items).items():
        placement = placement_of(item) or item
        if "n4" not in ring.preference(placement, 3):
            continue
        (new_home,) = set(after.preference(placement, 3)) - set(ring.preference(placement, 3))
        assert held == (2 if new_home == "n1" else 3), item


def test_a_hand_over_that_fails_unexpectedly_still_announces_the_leave(
    cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    network, coordinators = cluster(4)
    put(coordinators["n0"], "/f", b"w" * 5000)
    leaver = coordinators["n0"].homes("/f")[0]

    def broken(self, kind, ring, n):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in planning")

    monkeypatch.setattr(Departure, "_plan", broken)
    leave(network, coordinators, leaver)
    assert network.states[leaver] == "left"


def test_a_leaving_stand_in_hands_its_hints_over_so_an_acknowledged_write_keeps_w_copies(
    cluster,
) -> None:
    """Before: a leaving peer handed over only the keys it is a home of, and the hints it held
    as a stand-in left with it. A write acknowledged by one home and by the stand-in for a
    down home (its call to the third home failed) was then on one peer only."""
    network, coordinators = cluster(5)
    path = "/f"
    first, second, third = coordinators["n0"].homes(path)
    network.kill(third)  # the write's targets get a stand-in for it
    (stand_in,) = [t.node for t in coordinators[first].targets(path) if t.hint_for == third]
    with record_puts_fail(network, [second]):
        put(coordinators[stand_in], path, b"acknowledged")  # W=2: the first home and itself
    keys = [manifest_key(path), entry_key(path)]
    assert stand_in in holders(network, keys[0])
    leave(network, coordinators, stand_in)
    for key in keys:
        assert len(holders(network, key)) >= 2, key
    network.revive(third)
    stay = sorted(set(coordinators) - {stand_in})
    repair(start_jobs(network, coordinators, Monotonic(), nodes=stay))
    for node in (first, second, third):
        assert holders(network, keys[0]).count(node) == 1
        assert read(coordinators[node], path) == b"acknowledged", node


def test_the_hints_of_a_leave_wait_for_a_handoff_round_already_running(cluster) -> None:
    """A periodic round skips while another runs; the leave's must not, or its hints would
    leave with the peer."""
    network, coordinators = cluster(4)
    first, _, third = coordinators["n0"].homes("/f")
    network.kill(third)
    (stand_in,) = [t.node for t in coordinators[first].targets("/f") if t.hint_for == third]
    put(coordinators[stand_in], "/f", b"hinted")
    replica = network.replicas[stand_in]
    handoff = HintedHandoff(coordinators[stand_in], replica.blocks, replica.records, inline)
    run(handoff._round.acquire())  # a round in progress
    assert run(handoff.deliver()) == 0
    leaving = defer.ensureDeferred(handoff.deliver_before_leaving())
    assert not leaving.called
    handoff._round.release()
    assert run(leaving) >= 1 and handoff.pending() == 0
