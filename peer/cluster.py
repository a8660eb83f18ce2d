"""The coordinator's picture of the cluster: which peers exist, which are up, and the ring.

Peers come from gossip membership. Up means alive or suspect (a suspect may well be alive and
will be tried; a dead one is replaced by a stand-in). Every peer that has not left stays on the
ring, so a dead peer's keys go to stand-ins with hints instead of silently moving.
"""

from __future__ import annotations

from collections.abc import Callable

from gossip.membership import MemberInfo
from peer.ring import HashRing

UP_STATES = frozenset({"alive", "suspect"})


class ClusterView:
    """Peers by id and a ring rebuilt only when the set of ring members changes."""

    def __init__(self, self_id: str, source: Callable[[], list[MemberInfo]]) -> None:
        self.self_id = self_id
        self._source = source
        self._ring = HashRing([self_id])

    def peers(self) -> dict[str, MemberInfo]:
        """Every known peer (this one included), by node id."""
        return {peer.node_id: peer for peer in self._source()}

    def ring(self) -> HashRing:
        """The ring over every peer that has not left."""
        members = frozenset(node for node, peer in self.peers().items() if peer.state != "left") | {
            self.self_id
        }
        if members != self._ring.members:
            self._ring = HashRing(members)
        return self._ring

    def is_up(self, node_id: str) -> bool:
        """Whether `node_id` is alive or suspect (this peer always is)."""
        if node_id == self.self_id:
            return True
        peer = self.peers().get(node_id)
        return peer is not None and peer.state in UP_STATES

    def name_of(self, node_id: str) -> str:
        """The peer's name, or its id when unknown."""
        peer = self.peers().get(node_id)
        return peer.name if peer is not None else node_id
