"""Hinted handoff: data a stand-in stored for a down home goes to that home once it is up.

A stand-in keeps, beside the data, a hint record naming the home and the key (or block). Each
delivery round looks at the hints, and for every home that gossip says is up, sends it the
current local siblings of each hinted record and each hinted block; a hint is removed only after
the home acknowledged the data durably.

A home that will never come back (forgotten past the horizon, or superseded by a new node id
under its name: a replaced disk) cannot take its hints: they are re-homed instead, i.e. the
data goes to the key's current homes that are up, and then the hint is dropped. Nothing waits
on a hint forever.

A peer that leaves would take its hints with it: a write acknowledged by a stand-in counts it
among its W copies. Before it goes (peer.repair.departure) it hands every hint over: to the
home when that is up, re-homed otherwise.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from twisted.internet import defer

from peer.coordinator import Coordinator
from peer.repair.antientropy import placement_of
from peer.replica import BLOCK_HINT, HINT_PREFIX, RunInThread, parse_hint_key, sibling_to_wire
from peer.rpc import RpcError
from storage.blocks import BlockError, BlockStore
from storage.records import RecordStore, Sibling

log = logging.getLogger(__name__)

BATCH = 200


class HintedHandoff:
    """Delivers this peer's hints to their homes, one round at a time."""

    def __init__(
        self,
        coordinator: Coordinator,
        blocks: BlockStore,
        records: RecordStore,
        run_in_thread: RunInThread,
        gone: Callable[[str], bool] = lambda node_id: False,
    ) -> None:
        """`gone(node_id)`: whether that home will never come back (peer.repair.collector)."""
        self._coordinator = coordinator
        self._blocks = blocks
        self._records = records
        self._run = run_in_thread
        self._gone = gone
        self._round = defer.DeferredLock()
        self.delivered = 0
        self.rehomed = 0

    async def deliver(self) -> int:
        """One round: hand over what can be handed over now; returns hints delivered (none
        while another round runs)."""
        if self._round.locked:
            return 0
        return await self._round.run(lambda: defer.ensureDeferred(self._deliver_all(False)))

    async def deliver_before_leaving(self) -> int:
        """Every hint goes now, after any round running: to its home when that is up, else
        to the key's homes that are up. Returns the hints handed over."""
        return await self._round.run(lambda: defer.ensureDeferred(self._deliver_all(True)))

    async def _deliver_all(self, leaving: bool) -> int:
        hints = await self._run(lambda: list(self._records.keys(HINT_PREFIX)))
        by_home: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for hint in hints:
            home, key = parse_hint_key(hint)
            by_home[home].append((hint, key))
        delivered = 0
        cluster = self._coordinator.cluster
        for home, pending in by_home.items():
            up = cluster.is_up(home)
            try:
                if home == cluster.self_id or self._gone(home) or (leaving and not up):
                    delivered += await self._rehome(home, pending)
                elif up:
                    delivered += await self._deliver_to(home, pending)
            except RpcError as e:
                log.info("hinted handoff to %s deferred: %s", cluster.name_of(home), e)
        self.delivered += delivered
        return delivered

    def pending(self) -> int:
        """Hints stored here now (read from the store, so never a round behind the writes)."""
        return self._records.count(HINT_PREFIX)

    async def _deliver_to(
        self, home: str, pending: list[tuple[str, str]], keep_hint: bool = False
    ) -> int:
        records = [(hint, key) for hint, key in pending if not key.startswith(BLOCK_HINT)]
        blocks = [
            (hint, key[len(BLOCK_HINT) :]) for hint, key in pending if key.startswith(BLOCK_HINT)
        ]
        for hint, block in blocks:
            try:
                data = await self._run(self._blocks.get, block)
            except BlockError as e:
                log.warning("hinted block %s cannot be handed over: %s", block, e)
            else:
                await self._coordinator.call(home, "block.put", {"hash": block, "data": data})
            if not keep_hint:
                await self._run(self._records.delete, hint)
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            keys = [key for _, key in batch]
            sent = await self._run(lambda keys=keys: [self._records.get(k) for k in keys])
            items = [
                [key, sibling_to_wire(s), None]
                for key, now in zip(keys, sent, strict=True)
                for s in now
            ]
            if items:
                await self._coordinator.call(home, "record.put", {"items": items})
            if not keep_hint:
                await self._run(self._drop_hints, batch, sent)
        return len(pending)

    async def _rehome(self, home: str, pending: list[tuple[str, str]]) -> int:
        """Hand hints for a home that is gone, down while this peer leaves, or is this peer,
        to the keys' current homes that are up."""
        cluster = self._coordinator.cluster
        if home != cluster.self_id:
            log.warning(
                "re-homing %d hints for %s: %s", len(pending), cluster.name_of(home),
                "it will not come back" if self._gone(home) else "it is down as this peer leaves",
            )
        for hint, key in pending:
            block = key[len(BLOCK_HINT) :] if key.startswith(BLOCK_HINT) else None
            homes = self._coordinator.homes(block or placement_of(key) or key)
            for node in homes:
                if node == cluster.self_id or not cluster.is_up(node):
                    continue
                await self._deliver_to(node, [(hint, key)], keep_hint=True)
            await self._run(self._records.delete, hint)
        self.rehomed += len(pending)
        return len(pending)

    def _drop_hints(self, batch: list[tuple[str, str]], sent: list[list[Sibling]]) -> None:
        """Drop each delivered hint, unless its key changed here since it was sent (a write
        that landed meanwhile keeps its hint for the next round)."""
        records = self._records
        for (hint, key), siblings in zip(batch, sent, strict=True):
            records.delete_if(hint, _still(records, key, siblings))


def _still(
    records: RecordStore, key: str, siblings: list[Sibling]
) -> Callable[[list[Sibling]], bool]:
    """A delete_if check: whether `key` still holds exactly `siblings`."""
    return lambda _: records.get(key) == siblings
