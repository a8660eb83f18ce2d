"""A graceful leave that keeps N copies: before a peer goes, it hands its share to the peers
that become homes without it.

Without a hand-over a leaving peer takes its copies with it: each key it was a home of has N-1
copies until anti-entropy remakes the missing one from the homes that stay, and when two of a
key's three homes leave one after the other faster than that, a read answered by the two new,
still empty homes says the file does not exist. Riak transfers a node's partitions before it
leaves; a leaving peer here does the same, key by key:

1. each item it holds goes to every peer that is a home of the item in the ring without this
   peer but not in the ring with it (one new home for each key this peer is a home of):
   records in batches (a replica merges what it is sent, so sending one twice is harmless),
   blocks only where ``block.has`` says they are missing;
2. the leave is announced (gossip);
3. the same once more: until a new home heard of the leave it was no home yet, and its own
   anti-entropy may have handed back and dropped what it was given. Now it keeps it.

Each hand-over ends with the peer's hints (peer.repair.handoff): what it holds as a stand-in
for a down home, maybe one of a write's W acknowledged copies, goes to that home when it is
up and to the key's homes that are up otherwise.

All of it is bounded by a deadline (``--handover-timeout``): what is not handed over by then,
anti-entropy copies from the homes that stay, as it would without a hand-over. A new home that
is down or refuses is skipped, and its share follows the same way. A peer whose data has not
been checked against the cluster's collection rounds (peer.repair.rejoin) hands nothing over:
data that predates a sweep must not travel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from gossip.wire import WireError
from peer.coordinator import Coordinator
from peer.repair.antientropy import BLOCKS, RECORDS, AntiEntropy
from peer.repair.handoff import HintedHandoff
from peer.replica import Replica, RunInThread, sibling_to_wire
from peer.ring import HashRing
from peer.rpc import RpcError
from storage.blocks import BlockError
from storage.fsutil import StorageFull

log = logging.getLogger(__name__)

RECORD_BATCH = 1000  # sibling items per record.put (a replica takes up to 10,000)
RECORD_BATCH_BYTES = 4 * 1024 * 1024  # record values per record.put
BLOCK_BATCH = 1000  # hashes per block.has


def departure_plan(
    items: Iterable[tuple[str, str]], ring: HashRing, me: str, n: int
) -> dict[str, list[str]]:
    """For each peer, the keys among `items` ((key, placement) pairs) that it becomes a home
    of when `me` leaves `ring`."""
    if me not in ring.members:
        return {}
    after = ring.without(me)
    plan: dict[str, list[str]] = {}
    for key, placement in items:
        before = ring.preference(placement, n)
        if me not in before:
            continue
        for home in after.preference(placement, n):
            if home not in before:
                plan.setdefault(home, []).append(key)
    return plan


@dataclass
class HandedOver:
    """What one leave handed over, for its log line."""

    records: int = 0
    blocks: int = 0
    homes: int = 0
    hints: int = 0


class Departure:
    """Hands this peer's share over around the announcement of a graceful leave."""

    def __init__(
        self,
        coordinator: Coordinator,
        replica: Replica,
        anti_entropy: AntiEntropy,
        handoff: HintedHandoff,
        run_in_thread: RunInThread,
        clock: Callable[[], float],
        may_hand_over: Callable[[], bool] = lambda: True,
    ) -> None:
        """`clock` is monotonic (the deadline); `may_hand_over()` says whether this peer's
        data was checked against the cluster's collection rounds."""
        self._coordinator = coordinator
        self._anti_entropy = anti_entropy
        self._handoff = handoff
        self._replica = replica
        self._run = run_in_thread
        self._now = clock
        self._may_hand_over = may_hand_over
        self.handed_over = HandedOver()

    async def leave(self, announce: Callable[[], Awaitable[Any]], timeout: float) -> None:
        """Hand the share over, `announce` the leave, hand over what is still missing; the
        hand-overs stop at `timeout` seconds from now."""
        deadline = self._now() + timeout
        if not self._may_hand_over():
            log.info("leaving without a hand-over: this peer's data is not checked yet")
            await announce()
            return
        started = self._now()
        await self._hand_over_logged(deadline, "before the leave")
        await announce()
        await self._hand_over_logged(deadline, "after the leave")
        done = self.handed_over
        log.info(
            "left: handed %d records, %d blocks and %d hints to %d peers in %.1f s",
            done.records, done.blocks, done.hints, done.homes, self._now() - started,
        )

    async def _hand_over_logged(self, deadline: float, when: str) -> None:
        """`hand_over`, then the hints; a failure is logged: the leave is announced all the
        same."""
        try:
            await self.hand_over(deadline)
            if self._now() < deadline:
                self.handed_over.hints += await self._handoff.deliver_before_leaving()
        except Exception:
            log.exception("hand-over %s failed", when)

    async def hand_over(self, deadline: float) -> None:
        """Give each peer that becomes a home without this one what it lacks of its share,
        until `deadline`."""
        cluster = self._coordinator.cluster
        ring, n = cluster.ring(), self._coordinator.settings.n
        records = await self._run(self._plan, RECORDS, ring, n)
        blocks = await self._run(self._plan, BLOCKS, ring, n)
        homes = sorted(records.keys() | blocks.keys())
        self.handed_over.homes = max(self.handed_over.homes, len(homes))
        await defer.gatherResults(
            [
                defer.ensureDeferred(
                    self._give(home, records.get(home, []), blocks.get(home, []), deadline)
                )
                for home in homes
            ],
            consumeErrors=True,
        )

    def _plan(self, kind: str, ring: HashRing, n: int) -> dict[str, list[str]]:
        items = ((key, placement) for key, _, placement in self._anti_entropy.local_items(kind))
        return departure_plan(items, ring, self._coordinator.cluster.self_id, n)

    async def _give(self, home: str, keys: list[str], hashes: list[str], deadline: float) -> None:
        name = self._coordinator.cluster.name_of(home)
        try:
            for items in await self._run(self._record_batches, keys):
                if self._now() >= deadline:
                    return
                await self._coordinator.call(home, "record.put", {"items": items})
                self.handed_over.records += len({item[0] for item in items})
            for start in range(0, len(hashes), BLOCK_BATCH):
                batch = hashes[start : start + BLOCK_BATCH]
                if self._now() >= deadline:
                    return
                await self._give_blocks(home, batch, deadline)
        except (RpcError, WireError, StorageFull) as e:
            log.info("hand-over to %s stopped: %s", name, e)

    async def _give_blocks(self, home: str, batch: list[str], deadline: float) -> None:
        reply = await self._coordinator.call(
            home, "block.has", {"hashes": batch, "repair": True}
        )
        have = reply.get("have")
        if not isinstance(have, list) or len(have) != len(batch):
            raise WireError("block.has: have must be one boolean per hash")
        for block, held in zip(batch, have, strict=True):
            if held is True:
                continue
            if self._now() >= deadline:
                return
            try:
                await self._anti_entropy.push_block(home, block)
            except BlockError:
                continue  # unreadable here (now quarantined): the homes that stay have it
            self.handed_over.blocks += 1

    def _record_batches(self, keys: list[str]) -> list[list[list[Any]]]:
        """record.put items ([key, sibling, no hint]) for `keys`, in batches of bounded size."""
        return list(_batches(self._items(keys)))

    def _items(self, keys: list[str]) -> Iterator[tuple[list[Any], int]]:
        current = self._replica.records.get_many(keys)
        for key in keys:
            for sibling in current.get(key, []):
                yield [key, sibling_to_wire(sibling), None], len(sibling.value or b"")


def _batches(items: Iterable[tuple[list[Any], int]]) -> Iterator[list[list[Any]]]:
    """`items` ((item, value length) pairs) in lists of at most RECORD_BATCH items and about
    RECORD_BATCH_BYTES of values (a bigger item goes alone)."""
    batch: list[list[Any]] = []
    size = 0
    for item, length in items:
        if batch and (size + length > RECORD_BATCH_BYTES or len(batch) >= RECORD_BATCH):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += length
    if batch:
        yield batch
