"""Rejoining the cluster: a starting peer's data is checked before it is served, rebuilt when it
predates a sweep it missed, and a peer that starts empty fills its share before it counts.

- Checking: a peer that starts with data serves none of it (peer.replica.ReplicaState) until it
  has compared its collection rounds with the other peers' (peer.repair.horizon). If some peer
  swept a round this data was not accounted for in (the peer was forgotten, or its data
  directory was restored from an old copy), the data may hold deleted files and dropped
  versions: it is wiped, never merged back, and the peer refills like a new one. It says so in
  its log and in /v1/cluster. If no other peer answers for a while (the whole cluster
  restarting), it serves what it has; anti-entropy still refuses it later if it was stale.
- Filling: a peer that joined empty or was rebuilt is not ready: reads do not count its answers
  alone (peer.coordinator.settled_targets) until it pulled, from every other peer, the records
  they hold of which it is a home (peer.repair.antientropy `ae.pull`), as a bootstrapping
  Cassandra node streams its ranges before it serves reads. Its blocks follow once it is ready:
  a block is content-addressed and a read takes it from any peer that has it
  (Coordinator.fetch_block), so a block not pulled yet is never a stale answer, while a disk
  too small for every block the others still hold (garbage not collected yet while a peer is
  away) must not keep the peer out of reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gossip.wire import WireError
from peer.coordinator import Coordinator
from peer.repair.antientropy import BLOCKS, RECORDS, AntiEntropy
from peer.repair.collector import GarbageCollector
from peer.replica import LOCAL_PREFIX, Replica, RunInThread
from peer.rpc import RpcError
from storage.fsutil import StorageFull

log = logging.getLogger(__name__)

ALONE_STEPS = 20  # steps with no other peer answering before a peer serves its data anyway


@dataclass
class RejoinStatus:
    """Where this peer is in rejoining, for /v1/cluster and /metrics."""

    phase: str = "checking"  # checking -> filling -> ready
    rebuilds: int = 0
    last_rebuild: str = ""
    items_pulled: int = 0
    blocks_pending: int = 0  # peers whose blocks of this peer's share are still to be pulled


class Rejoin:
    """Drives checking and filling, one `step` at a time (a timer calls it until ready)."""

    def __init__(
        self,
        coordinator: Coordinator,
        replica: Replica,
        collector: GarbageCollector,
        anti_entropy: AntiEntropy,
        run_in_thread: RunInThread,
        expects_peers: bool,
    ) -> None:
        """`expects_peers`: this peer was told to join others, so it waits to hear one before
        deciding that it is alone."""
        self._coordinator = coordinator
        self._replica = replica
        self._collector = collector
        self._anti_entropy = anti_entropy
        self._run = run_in_thread
        self._expects_peers = expects_peers
        self._unanswered = 0
        self._empty = False
        self._checked = False  # this peer's rounds were compared with the cluster's
        self._stale: str | None = None
        self._started = False
        self._stepping = False
        # Where each pull from a peer goes on, by (peer, kind): a pull cut short (the peer
        # unreachable, this disk full) resumes there, and the peers whose blocks of our share
        # are still to be pulled once this peer is ready.
        self._cursors: dict[tuple[str, str], str] = {}
        self._blocks_from: set[str] = set()
        self.status = RejoinStatus()

    async def start(self) -> None:
        """Decide from the stored data what has to happen before this peer serves it."""
        self._started = True
        await self._collector.load()
        self._empty = await self._run(self._is_empty)
        state = self._replica.state
        # An empty store has nothing stale to serve: it takes writes at once, and the check
        # only adopts the cluster's round numbers.
        state.verified = self._empty or (not self._others() and not self._expects_peers)
        state.ready = not (self._empty or self._collector.state.filling)
        if self._empty and not self._collector.state.filling:
            self._collector.state.filling = True
            await self._collector.save()
        self._update_phase()

    @property
    def checked(self) -> bool:
        """Whether this peer's rounds were compared with the cluster's since it started."""
        return self._checked

    def stale(self, reason: str) -> None:
        """Anti-entropy learned that this peer's data predates a sweep: rebuild at the next
        step."""
        self._stale = reason
        self._checked = False
        self._replica.state.verified = False
        self._update_phase()

    async def step(self) -> None:
        """Make what progress can be made now (the first step starts); a no-op once ready and
        holding its blocks."""
        settled = self.status.phase == "ready" and self._checked and not self._blocks_from
        if self._stepping or (self._started and settled):
            return
        self._stepping = True
        try:
            if not self._started:
                await self.start()
            state = self._replica.state
            if not self._checked:
                await self._check()
            if self._checked and not state.ready:
                await self._fill()
            if self._checked and state.ready and self._blocks_from:
                await self._fill_blocks()
        finally:
            self._stepping = False
            self._update_phase()

    def _others(self) -> list[str]:
        cluster = self._coordinator.cluster
        members = sorted(cluster.ring().members)
        return [n for n in members if n != cluster.self_id and cluster.is_up(n)]

    async def _check(self) -> None:
        others = self._others()
        if not others and not self._expects_peers and self._stale is None:
            self._replica.state.verified = self._checked = True  # the first peer of a cluster
            return
        call = self._coordinator.call
        swept = await swept_rounds(
            (self._coordinator.cluster.name_of(node), partial(call, node, "gc.generation", {}))
            for node in others
        )
        if not swept and self._stale is None:
            self._unanswered += 1
            if self._unanswered < ALONE_STEPS:
                return
            if not self._empty:
                log.warning("rejoin: no other peer answered; serving this peer's data unchecked")
            self._replica.state.verified = self._checked = True
            return
        await self.decide(swept)

    async def decide(self, swept: list[int]) -> None:
        """Given the last swept round of each peer that answered, trust this peer's data, or
        rebuild it when it predates one of them."""
        latest = max(swept, default=self._collector.state.swept)
        mine = self._collector.state
        if self._empty and self._stale is None:  # nothing to distrust: take the rounds
            mine.adopt(latest)
            await self._collector.save()
        elif mine.stale_against(latest) or self._stale is not None:
            reason = self._stale or (
                f"its data was last accounted for in collection round {mine.accounted}, "
                f"but round {latest} was swept without it"
            )
            await self._rebuild(reason, latest)
        self._replica.state.verified = self._checked = True

    async def _rebuild(self, reason: str, latest: int) -> None:
        log.warning("rejoin: rebuilding this peer from the others: %s", reason)
        await self._run(self._wipe)
        state = self._collector.state
        state.adopt(latest)
        state.filling = True
        await self._collector.save()
        self._replica.state.ready = False
        self._cursors = {}
        self._blocks_from = set()
        self._stale = None
        self._empty = True
        self.status.rebuilds += 1
        self.status.last_rebuild = reason

    def _wipe(self) -> None:
        """Drop every replicated record, every hint and every block; keep this peer's own
        bookkeeping."""
        records = self._replica.records
        for key in [k for k in records.keys("") if not k.startswith(LOCAL_PREFIX)]:
            records.delete(key)
        blocks = self._replica.blocks
        for block in list(blocks.hashes()):
            blocks.delete(block)

    def _is_empty(self) -> bool:
        records = self._replica.records
        no_records = all(key.startswith(LOCAL_PREFIX) for key in records.keys(""))
        return no_records and next(iter(self._replica.blocks.hashes()), None) is None

    async def _fill(self) -> None:
        others = self._others()
        if not others and self._expects_peers and self._unanswered < ALONE_STEPS:
            self._unanswered += 1
            return  # gossip has not shown the peers it joined yet
        failed = await self._pull(others, RECORDS)
        # Every acknowledged item is on W peers: with at most W - 1 of them unreachable, some
        # other peer gave it. More unreachable than that, and the share may be incomplete.
        if len(failed) > self._coordinator.settings.w - 1 or (others and failed == others):
            return
        self._collector.state.filling = False
        await self._collector.save()
        self._replica.state.ready = True
        self._blocks_from = set(others)
        pulled = self.status.items_pulled
        log.info("rejoin: holding its share of records (%d items pulled): ready", pulled)

    async def _fill_blocks(self) -> None:
        """Pull the blocks of this peer's share from the peers not pulled from yet; one that is
        gone meanwhile is left to anti-entropy."""
        self._blocks_from &= set(self._others())
        self._blocks_from = set(await self._pull(sorted(self._blocks_from), BLOCKS))
        if not self._blocks_from:
            pulled = self.status.items_pulled
            log.info("rejoin: holding its share of blocks too (%d items pulled)", pulled)

    async def _pull(self, nodes: list[str], kind: str) -> list[str]:
        """Pull this peer's share of `kind` from each of `nodes`, each from where the last try
        stopped; returns those that failed (to go on at a later step)."""
        failed = []
        for node in nodes:
            after: str | None = self._cursors.get((node, kind), "")
            try:
                while after is not None:
                    stored, after = await self._anti_entropy.pull_page(node, kind, after)
                    self.status.items_pulled += stored
                    if after is not None:
                        self._cursors[node, kind] = after
            except (RpcError, WireError, KeyError, TypeError, StorageFull) as e:
                log.info("rejoin: pulling %s from %s deferred: %s", kind, node, e)
                failed.append(node)
            else:
                self._cursors.pop((node, kind), None)
        return failed

    def _update_phase(self) -> None:
        state = self._replica.state
        self.status.phase = (
            "checking" if not state.verified else "filling" if not state.ready else "ready"
        )
        self.status.blocks_pending = len(self._blocks_from)

    def describe(self) -> dict[str, Any]:
        """This peer's rejoin state for /v1/cluster."""
        return {
            "phase": self.status.phase,
            "rebuilds": self.status.rebuilds,
            "last_rebuild": self.status.last_rebuild,
            "items_pulled": self.status.items_pulled,
            "blocks_pending": self.status.blocks_pending,
        }


async def swept_rounds(
    asks: Iterable[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]],
) -> list[int]:
    """The last swept collection round each peer says when asked (`gc.generation`), one after
    another; a peer that does not answer, or answers nonsense, is left out (and logged)."""
    swept: list[int] = []
    for who, ask in asks:
        try:
            reply = await ask()
            swept.append(int(reply["swept"]))
        except (RpcError, WireError, KeyError, TypeError, ValueError) as e:
            log.info("rejoin: %s did not say its rounds: %s", who, e)
    return swept
