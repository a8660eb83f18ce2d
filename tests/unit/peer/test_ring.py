"""Consistent hashing: stable, balanced, and moving little when membership changes."""

from collections import Counter

from peer.ring import HashRing


def test_preference_lists_distinct_members_in_a_stable_order() -> None:
    ring = HashRing(["a", "b", "c", "d"])
    again = HashRing(["d", "c", "b", "a"])
    for key in (f"/file-{i}" for i in range(200)):
        order = ring.preference(key)
        assert sorted(order) == ["a", "b", "c", "d"]
        assert again.preference(key) == order
        assert ring.preference(key, 3) == order[:3]


def test_keys_spread_over_members() -> None:
    ring = HashRing([f"node-{i}" for i in range(5)])
    firsts = Counter(ring.preference(f"key-{i}", 1)[0] for i in range(10_000))
    assert len(firsts) == 5
    assert min(firsts.values()) > 10_000 / 5 * 0.6


def test_adding_a_member_moves_only_its_share() -> None:
    keys = [f"key-{i}" for i in range(5_000)]
    before = HashRing([f"node-{i}" for i in range(4)])
    after = HashRing([f"node-{i}" for i in range(5)])
    moved = sum(before.preference(k, 1) != after.preference(k, 1) for k in keys)
    assert 0 < moved < len(keys) * 0.35
    assert all(
        after.preference(k, 1)[0] == "node-4"
        for k in keys
        if before.preference(k, 1) != after.preference(k, 1)
    )


def test_limits_and_empty_ring() -> None:
    assert HashRing([]).preference("x") == []
    assert HashRing(["a"]).preference("x", 3) == ["a"]
