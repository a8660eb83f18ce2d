"""The coordinator's picture of the cluster: which peers exist, which are up, and the ring.

Peers come from gossip membership. Up means alive or suspect (a suspect may well be alive and
will be tried; a dead one is replaced by a stand-in). A dead peer stays on the ring for
`dead_after` seconds, so its keys go to stand-ins with hints while it may come back; after
that, or once it left, it is off the ring and its keys have new homes, which anti-entropy
fills (re-replication).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from gossip.membership import MemberInfo
from peer.ring import HashRing

UP_STATES = frozenset({"alive", "suspect"})


class ClusterView:
    """Peers by id and a ring rebuilt only when the set of ring members changes.

    ``version``, when given, must return a number that changes whenever ``source`` would
    report something new other than ``last_heard``; the peers and the ring are then computed
    again only when it changes (or a dead peer's time on the ring runs out). Without it, every
    call reads ``source``.
    """

    def __init__(
        self,
        self_id: str,
        source: Callable[[], list[MemberInfo]],
        clock: Callable[[], float] = lambda: 0.0,
        dead_after: float = float("inf"),
        version: Callable[[], int] | None = None,
    ) -> None:
        self.self_id = self_id
        self._source = source
        self._clock = clock
        self._dead_after = dead_after
        self._version = version
        self._dead_since: dict[str, float] = {}
        self._peers: dict[str, MemberInfo] = {}
        self._peers_version: int | None = None  # the version `_peers` was read at
        self._ring = HashRing([self_id])
        self._ring_version: int | None = None  # the version `_ring` was computed at
        self._ring_until = -math.inf  # when a dead peer on `_ring` is due to leave it
        self._not_ready: set[str] = set()

    def peers(self) -> Mapping[str, MemberInfo]:
        """Every known peer (this one included), by node id.

        With a ``version`` source this is one shared mapping while the version stays the
        same: do not change it, and do not rely on its ``last_heard`` values.
        """
        if self._version is None:
            return {peer.node_id: peer for peer in self._source()}
        version = self._version()  # read first: a change after it is seen on the next call
        if version != self._peers_version:
            self._peers = {peer.node_id: peer for peer in self._source()}
            self._peers_version = version
        return self._peers

    def ring(self) -> HashRing:
        """The ring over every peer that has not left and has not been dead for too long."""
        version = self._version() if self._version is not None else None
        now = self._clock()
        if version is not None and version == self._ring_version and now < self._ring_until:
            return self._ring
        members = {self.self_id}
        until = math.inf
        for node, peer in self.peers().items():
            if peer.state != "dead":
                self._dead_since.pop(node, None)
                if peer.state != "left":
                    members.add(node)
                continue
            # Dead since we first saw it dead (gossip may tell us about a peer we never heard).
            leaves_at = self._dead_since.setdefault(node, now) + self._dead_after
            if now < leaves_at:
                members.add(node)
                until = min(until, leaves_at)
        if members != self._ring.members:
            self._ring = HashRing(members)
        self._ring_version, self._ring_until = version, until
        return self._ring

    def heard_ready(self, node_id: str, ready: bool) -> None:
        """A reply from `node_id` said whether it holds its whole share yet
        (peer.replica.ReplicaState)."""
        if ready:
            self._not_ready.discard(node_id)
        else:
            self._not_ready.add(node_id)

    def is_ready(self, node_id: str) -> bool:
        """False while `node_id` is known to be still filling its share (joining, rebuilt)."""
        return node_id not in self._not_ready

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
