"""The coordinator's picture of the cluster: which peers exist, which are up, and the ring.

Peers come from gossip membership. Up means alive or suspect (a suspect may well be alive and
will be tried; a dead one is replaced by a stand-in). A dead peer stays on the ring for
`dead_after` seconds, so its keys go to stand-ins with hints while it may come back; after
that, or once it left, it is off the ring and its keys have new homes, which anti-entropy
fills (re-replication).
"""

from __future__ import annotations

from collections.abc import Callable

from gossip.membership import MemberInfo
from peer.ring import HashRing

UP_STATES = frozenset({"alive", "suspect"})


class ClusterView:
    """Peers by id and a ring rebuilt only when the set of ring members changes."""

    def __init__(
        self,
        self_id: str,
        source: Callable[[], list[MemberInfo]],
        clock: Callable[[], float] = lambda: 0.0,
        dead_after: float = float("inf"),
    ) -> None:
        self.self_id = self_id
        self._source = source
        self._clock = clock
        self._dead_after = dead_after
        self._dead_since: dict[str, float] = {}
        self._ring = HashRing([self_id])

    def peers(self) -> dict[str, MemberInfo]:
        """Every known peer (this one included), by node id."""
        return {peer.node_id: peer for peer in self._source()}

    def ring(self) -> HashRing:
        """The ring over every peer that has not left and has not been dead for too long."""
        members = frozenset(node for node, peer in self.peers().items() if self._on_ring(peer)) | {
            self.self_id
        }
        if members != self._ring.members:
            self._ring = HashRing(members)
        return self._ring

    def _on_ring(self, peer: MemberInfo) -> bool:
        if peer.state != "dead":
            self._dead_since.pop(peer.node_id, None)
            return peer.state != "left"
        # Dead since we first saw it dead (gossip may tell us about a peer we never heard).
        since = self._dead_since.setdefault(peer.node_id, self._clock())
        return self._clock() - since < self._dead_after

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
