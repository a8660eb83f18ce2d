"""ClusterView: who is up, and when a dead peer's share moves to new homes."""

from gossip.membership import MemberInfo
from peer.cluster import ClusterView


def member(name: str, state: str, heard: float | None = None) -> MemberInfo:
    return MemberInfo(name, name, state, 1, ("127.0.0.1", 1), ("127.0.0.1", 2), 1, heard)


def test_a_dead_peer_leaves_the_ring_after_dead_after_and_returns_when_alive() -> None:
    now = [100.0]
    states = {"a": "alive", "b": "alive", "c": "dead"}
    view = ClusterView(
        "a", lambda: [member(n, s) for n, s in states.items()], lambda: now[0], dead_after=30
    )
    assert view.ring().members == {"a", "b", "c"}
    assert not view.is_up("c")
    now[0] += 29
    assert "c" in view.ring().members
    now[0] += 2
    assert view.ring().members == {"a", "b"}
    states["c"] = "alive"
    assert view.ring().members == {"a", "b", "c"}
    states["c"] = "dead"
    assert "c" in view.ring().members  # dead again: the clock starts over


def test_left_peers_are_off_the_ring_and_suspects_are_up() -> None:
    view = ClusterView(
        "a", lambda: [member("a", "alive"), member("b", "left"), member("c", "suspect")]
    )
    assert view.ring().members == {"a", "c"}
    assert view.is_up("c") and not view.is_up("b") and view.is_up("a")
    assert view.name_of("zzz") == "zzz"
