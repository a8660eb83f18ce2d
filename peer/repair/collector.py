"""Garbage collection: blocks no manifest references, and tombstones every replica holds.

Blocks are placed by hash and manifests by path, so no single peer knows every reference: a
collection round asks every peer on the ring for the blocks its manifests reference (every
version, siblings included) and runs only when all of them are alive and answer. A block is
removed only if nobody references it and it was not put or deduplicated against (touched)
within the grace period, which covers writes in flight: their blocks land before their
manifest. A tombstone is purged when no hints are pending anywhere and every peer holds it (or
nothing) for that key, so no replica and no stand-in can bring the deleted value back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gossip.wire import Message, WireError
from peer.coordinator import Coordinator
from peer.manifest import Manifest
from peer.quorum import missing_siblings
from peer.repair.antientropy import placement_of
from peer.repair.handoff import HintedHandoff
from peer.replica import Replica, RunInThread, siblings_from_wire
from peer.rpc import Handler, RpcError
from storage.records import Sibling

log = logging.getLogger(__name__)

PURGE_BATCH = 500


@dataclass
class CollectorCounters:
    """What garbage collection did, for /metrics and /v1/cluster."""

    rounds: int = 0
    skipped: int = 0
    blocks_removed: int = 0
    bytes_removed: int = 0
    tombstones_purged: int = 0
    last_skip_reason: str = ""


class GarbageCollector:
    """Runs collection rounds and answers other peers' `gc.state` calls."""

    def __init__(
        self,
        coordinator: Coordinator,
        replica: Replica,
        handoff: HintedHandoff,
        run_in_thread: RunInThread,
        wall_clock: Callable[[], float],
        grace: float,
    ) -> None:
        self._coordinator = coordinator
        self._replica = replica
        self._handoff = handoff
        self._run = run_in_thread
        self._wall_clock = wall_clock
        self._grace = grace
        self.counters = CollectorCounters()

    def handlers(self) -> dict[str, Handler]:
        """The RPC methods other collectors call."""
        return {"gc.state": self._serve_state}

    def _referenced(self) -> set[str]:
        """Block hashes referenced by any version of any manifest stored here."""
        referenced: set[str] = set()
        for key, siblings in self._replica.records.range("f:", "f;"):
            for sibling in siblings:
                if sibling.value is None:
                    continue
                try:
                    manifest = Manifest.decode(sibling.value)
                except ValueError:
                    log.warning("gc: unreadable manifest at %s: keeping every block", key)
                    raise
                referenced.update(block.hash for block in manifest.blocks)
        return referenced

    async def _serve_state(self, message: Message) -> dict[str, Any]:
        referenced = await self._run(self._referenced)
        return {"references": sorted(referenced), "hints": self._handoff.pending}

    async def run_round(self) -> None:
        """One collection: skipped (with the reason kept) unless every peer answers."""
        cluster = self._coordinator.cluster
        members = sorted(cluster.ring().members)
        states = {cluster.name_of(m): cluster.peers().get(m) for m in members}
        not_alive = [
            name
            for name, info in states.items()
            if info is None or (info.state != "alive" and info.node_id != cluster.self_id)
        ]
        if not_alive:
            return self._skip(f"peers not alive: {', '.join(sorted(not_alive))}")
        referenced: set[str] = set()
        hints = 0
        for member in members:
            try:
                if member == cluster.self_id:
                    reply = await self._serve_state(Message("gc.state", {}))
                else:
                    reply = await self._coordinator.call(member, "gc.state", {})
            except (RpcError, WireError, ValueError) as e:
                return self._skip(f"{cluster.name_of(member)} did not answer: {e}")
            referenced.update(h for h in reply["references"] if isinstance(h, str))
            hints += int(reply["hints"])
        removed, size = await self._run(self._remove_unreferenced, referenced)
        self.counters.blocks_removed += removed
        self.counters.bytes_removed += size
        if hints == 0:
            await self._purge_tombstones(members)
        self.counters.rounds += 1

    def _skip(self, reason: str) -> None:
        self.counters.skipped += 1
        self.counters.last_skip_reason = reason

    def _remove_unreferenced(self, referenced: set[str]) -> tuple[int, int]:
        blocks = self._replica.blocks
        cutoff = self._wall_clock() - self._grace
        removed = size = 0
        for block in list(blocks.hashes()):
            if block in referenced:
                continue
            used = blocks.last_used(block)
            if used is None or used > cutoff:
                continue
            length = blocks.size(block) or 0
            if blocks.delete(block):
                removed += 1
                size += length
        return removed, size

    async def _purge_tombstones(self, members: list[str]) -> None:
        """Purge local tombstones that no peer could undo: every member (not only the homes: a
        stand-in may still hold a version it took for a down home) holds the tombstone or
        nothing for that key."""

        def tombstoned() -> list[tuple[str, list[Sibling]]]:
            return [
                (key, siblings)
                for key, siblings in self._replica.records.range()
                if placement_of(key) is not None and siblings and all(s.tombstone for s in siblings)
            ][:PURGE_BATCH]

        candidates = await self._run(tombstoned)
        if not candidates:
            return
        keys = [key for key, _ in candidates]
        held: dict[str, list[list[Sibling]]] = {}
        for member in members:
            if member == self._coordinator.cluster.self_id:
                continue
            try:
                reply = await self._coordinator.call(member, "record.get", {"keys": keys})
            except (RpcError, WireError):
                return
            held[member] = [siblings_from_wire(raw) for raw in reply["records"]]
        for index, (key, mine) in enumerate(candidates):
            if all(_undoes_nothing(theirs[index], mine) for theirs in held.values()):
                await self._run(self._replica.records.delete, key)
                self.counters.tombstones_purged += 1


def _undoes_nothing(theirs: list[Sibling], mine: list[Sibling]) -> bool:
    """Whether a peer holding `theirs` could not bring back what `mine` (tombstones) deleted."""
    if not theirs:
        return True
    return all(s.tombstone for s in theirs) and not missing_siblings(theirs, mine)
