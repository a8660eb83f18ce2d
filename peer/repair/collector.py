"""Garbage collection: blocks no manifest references, and tombstones every peer holds.

Blocks are placed by hash and manifests by path, so no single peer knows every reference, and
anti-entropy would copy back whatever one peer removed while another still held it. So a round
is cluster-wide: the peer that runs it asks every peer, in phases, and then every peer sweeps at
once (`gc.sweep`).

A round runs only when every peer that could bring purged data back answers: every peer known
to any of them (peer.repair.horizon), including those that left or died, until they have been
away longer than the horizon. Its phases:

0. `gc.generation`: every peer's round numbers; a peer whose data predates the last sweep is
   being rebuilt, and the round waits for it.
1. `gc.begin`: every peer records, durably, that its data is accounted for in this round, takes
   a mark of its block activity (peer.pins) and returns the blocks its writes in progress pin
   and the peers it knows (as gossip shows them now: a peer that just joined may be
   coordinating writes, and the round waits for it).
2. `gc.refs`: every peer returns the blocks its manifests reference (every version, siblings
   included). Pins were read before any reference, so a write's blocks are pinned or referenced.
3. The runner checks its own tombstones against every peer (`record.get`): a tombstone is purged
   only where every peer holds it or nothing for that key.
4. `gc.sweep`: every peer removes the blocks neither referenced nor pinned and not stored or
   touched since its mark (and older than `--gc-grace`, a courtesy: safety does not depend on
   it), and purges those tombstones if it still holds nothing newer (a conditional delete).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gossip.wire import Message, WireError
from peer.cluster import UP_STATES
from peer.coordinator import Coordinator
from peer.manifest import Manifest
from peer.quorum import missing_siblings
from peer.repair.antientropy import placement_of
from peer.repair.horizon import HorizonState, Seen
from peer.replica import (
    LOCAL_PREFIX,
    Replica,
    RunInThread,
    sibling_to_wire,
    siblings_from_wire,
)
from peer.rpc import Handler, RpcError
from storage.fsutil import SpaceReserve, StorageFull
from storage.records import Sibling
from storage.vclock import VectorClock

log = logging.getLogger(__name__)

PURGE_BATCH = 500
SAVE_ABSENCES_EVERY = 10.0  # seconds; the known set itself is saved whenever it changes
MAX_KEEP = 1_000_000
HORIZON_KEY = LOCAL_PREFIX + "horizon"


@dataclass
class CollectorCounters:
    """What garbage collection did, for /metrics and /v1/cluster."""

    rounds: int = 0
    skipped: int = 0
    blocks_removed: int = 0
    bytes_removed: int = 0
    tombstones_purged: int = 0
    forgotten: int = 0
    last_skip_reason: str = ""


class GarbageCollector:
    """Runs cluster-wide collection rounds, answers other runners' phases, and keeps this peer's
    horizon state (known peers, round numbers)."""

    def __init__(
        self,
        coordinator: Coordinator,
        replica: Replica,
        run_in_thread: RunInThread,
        wall_clock: Callable[[], float],
        monotonic: Callable[[], float],
        grace: float,
        horizon: float,
        interval: float = 0.0,
        may_run: Callable[[], bool] = lambda: True,
        reserve: SpaceReserve | None = None,
    ) -> None:
        """`interval`: how often rounds run; a peer swept by another peer's round within the
        last interval leaves the next round to it (one runner is enough, any one is safe).
        Rounds run only once `may_run()`: this peer compared its rounds with the cluster's, so
        it has heard the peers it joined (peer.repair.rejoin). `reserve` is given up when the
        disk is full, so that round numbers can still be recorded and space freed."""
        self._coordinator = coordinator
        self._replica = replica
        self._run = run_in_thread
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._grace = grace
        self._horizon = horizon
        self._interval = interval
        self._may_run = may_run
        self._reserve = reserve
        self._swept_by_other_at: float | None = None
        self.state = HorizonState()
        self._loaded = False
        self._saves = 0  # the number of the last save, the local clock of the stored state
        self._observed_at: float | None = None
        self._saved_at = -math.inf
        self._marks: dict[str, int] = {}
        self._rounds = itertools.count(1)
        self.counters = CollectorCounters()

    def handlers(self) -> dict[str, Handler]:
        """The RPC methods other collectors call."""
        return {
            "gc.generation": self._serve_generation,
            "gc.begin": self._serve_begin,
            "gc.refs": self._serve_refs,
            "gc.sweep": self._serve_sweep,
        }

    # -- horizon state ---------------------------------------------------------------------

    async def load(self) -> None:
        """Read this peer's horizon state from its record store (a fresh one when absent)."""
        siblings = await self._run(self._replica.records.get, HORIZON_KEY)
        if siblings and siblings[-1].value is not None:
            self.state = HorizonState.decode(siblings[-1].value)
        self._saves = max((s.clock.entries.get("local", 0) for s in siblings), default=0)
        self._loaded = True

    async def save(self) -> None:
        """Persist the horizon state durably (a local record: never replicated).

        The state is encoded and numbered here, in the reactor thread, so that of two saves
        whose writes run at once in the thread pool the later one wins whichever lands first
        (numbered in the thread, both read the same number and the store kept the first)."""
        if not self._loaded:
            raise RpcError("starting", "the horizon state is not loaded yet")
        self._saves += 1
        sibling = Sibling(VectorClock({"local": self._saves}), self.state.encode())

        def write() -> None:
            self._replica.records.put(HORIZON_KEY, sibling)

        try:
            await self._run(write)
        except StorageFull:
            if self._reserve is None or not await self._run(self._reserve.release):
                raise
            log.warning("disk full: gave up the space reserve to record collection rounds")
            await self._run(write)

    def gone(self, node_id: str) -> bool:
        """Whether `node_id` will never come back with its data: forgotten past the horizon, or
        superseded by a new node id under its name (it may still be on the ring as dead)."""
        return self._loaded and node_id not in self.state.known

    async def observe(self) -> None:
        """Bring the known peers up to date with gossip (absences counted on the monotonic
        clock), forgetting those past the horizon or superseded. A newly seen peer is saved at
        once: a peer that restarts must never run a round knowing fewer peers than it saw."""
        if not self._loaded:
            return
        now = self._monotonic()
        elapsed = 0.0 if self._observed_at is None else max(0.0, now - self._observed_at)
        self._observed_at = now
        before = set(self.state.known)
        cluster = self._coordinator.cluster
        seen = [
            Seen(node, info.name, node == cluster.self_id or info.state in UP_STATES)
            for node, info in cluster.peers().items()
        ]
        for forgotten in self.state.observe(seen, elapsed, self._horizon):
            self.counters.forgotten += 1
            log.warning(
                "forgetting peer %s (%s): %s; if it returns it is rebuilt from the others",
                forgotten.name,
                forgotten.node_id,
                forgotten.reason,
            )
        if set(self.state.known) != before or now - self._saved_at >= SAVE_ABSENCES_EVERY:
            self._saved_at = now
            await self.save()

    # -- a round ---------------------------------------------------------------------------

    async def run_round(self) -> None:
        """One cluster-wide collection: skipped (with the reason kept) unless every known peer
        answers every phase."""
        if not self._loaded:
            return self._skip("this peer is starting")
        await self.observe()
        if not self._replica.state.verified or not self._may_run():
            return self._skip("this peer's data is still being checked against the cluster")
        other = self._swept_by_other_at
        if other is not None and self._monotonic() - other < self._interval:
            self.counters.last_skip_reason = ""
            return  # another peer is running the rounds

        cluster = self._coordinator.cluster
        away = self.state.away()
        if away:
            names = ", ".join(
                f"{self.state.name_of(n)} ({s:.0f} s of {self._horizon:g} s)"
                for n, s in sorted(away.items())
            )
            return self._skip(f"known peers away: {names}")
        members = sorted(self.state.known)
        try:
            generations = [await self._ask(m, "gc.generation", {}) for m in members]
            swept = max(int(g["swept"]) for g in generations)
            stale = [
                cluster.name_of(m)
                for m, g in zip(members, generations, strict=True)
                if int(g["accounted"]) < swept
            ]
            if stale:
                return self._skip(f"being rebuilt after missing a sweep: {', '.join(stale)}")
            round_id = f"{cluster.self_id}:{next(self._rounds)}"
            # Above every round any member took part in: a peer away since keeps a lower one,
            # so a sweep of this round shows its data predates it.
            proposal = max(int(g["accounted"]) for g in generations) + 1
            begin = {"round": round_id, "proposal": proposal}
            keep: set[str] = set()
            known: set[str] = set()
            for member in members:
                reply = await self._ask(member, "gc.begin", begin)
                keep.update(_strings(reply["pins"], "pins"))
                known.update(_strings(reply["known"], "known"))
            unheard = known - set(members)
            if unheard:
                names = ", ".join(sorted(self.state.name_of(n) for n in unheard))
                return self._skip(f"peers known to others have not answered: {names}")
            for member in members:
                reply = await self._ask(member, "gc.refs", {"round": round_id})
                keep.update(_strings(reply["references"], "references"))
            tombstones = await self._purgeable(members)
            sweep = {
                "round": round_id,
                "generation": proposal,
                "keep": sorted(keep),
                "tombstones": [[k, [sibling_to_wire(s) for s in v]] for k, v in tombstones],
            }
            for member in members:
                reply = await self._ask(member, "gc.sweep", sweep)
                self.counters.blocks_removed += int(reply["removed"])
                self.counters.bytes_removed += int(reply["bytes"])
                self.counters.tombstones_purged += int(reply["purged"])
        except (RpcError, WireError, KeyError, TypeError, ValueError) as e:
            return self._skip(f"a peer did not answer: {e}")
        self.counters.rounds += 1
        self.counters.last_skip_reason = ""

    async def _ask(self, member: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if member == self._coordinator.cluster.self_id:
            return await self.handlers()[method](Message(method, args))
        return await self._coordinator.call(member, method, args)

    def _skip(self, reason: str) -> None:
        self.counters.skipped += 1
        self.counters.last_skip_reason = reason

    async def _purgeable(self, members: list[str]) -> list[tuple[str, list[Sibling]]]:
        """This peer's tombstones that no peer could undo: every member (not only the homes: a
        stand-in may hold a version it took for a down home) holds the tombstone or nothing."""

        def tombstoned() -> list[tuple[str, list[Sibling]]]:
            return [
                (key, siblings)
                for key, siblings in self._replica.records.range()
                if placement_of(key) is not None and siblings and all(s.tombstone for s in siblings)
            ][:PURGE_BATCH]

        candidates = await self._run(tombstoned)
        if not candidates:
            return []
        keys = [key for key, _ in candidates]
        others = [m for m in members if m != self._coordinator.cluster.self_id]
        held = []
        for member in others:
            reply = await self._coordinator.call(member, "record.get", {"keys": keys})
            held.append([siblings_from_wire(raw) for raw in reply["records"]])
        return [
            (key, mine)
            for index, (key, mine) in enumerate(candidates)
            if all(undoes_nothing(theirs[index], mine) for theirs in held)
        ]

    # -- the phases, served ----------------------------------------------------------------

    async def _serve_generation(self, message: Message) -> dict[str, Any]:
        if not self._loaded:
            raise RpcError("starting", "the horizon state is not loaded yet")
        return {"accounted": self.state.accounted, "swept": self.state.swept}

    async def _serve_begin(self, message: Message) -> dict[str, Any]:
        round_id = message.field("round", str)
        proposal = message.field("proposal", int)
        if not self._replica.state.verified:
            raise RpcError("starting", "this peer's data is still being checked")
        if proposal <= self.state.swept:
            raise RpcError(
                "bad_round",
                f"round {proposal} is not after this peer's last sweep ({self.state.swept})",
            )
        if proposal > self.state.accounted:
            self.state.accounted = proposal
            await self.save()
        if round_id not in self._marks:
            self._marks[round_id] = self._replica.activity.mark()
        # The peers gossip shows now, not as of this peer's last round: one that joined since
        # may be coordinating writes whose pins the round must wait for.
        await self.observe()
        return {
            "pins": sorted(self._coordinator.pins.held()),
            "known": sorted(self.state.known),
        }

    async def _serve_refs(self, message: Message) -> dict[str, Any]:
        referenced = await self._run(self._referenced)
        return {"references": sorted(referenced)}

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

    async def _serve_sweep(self, message: Message) -> dict[str, Any]:
        round_id = message.field("round", str)
        generation = message.field("generation", int)
        keep = set(_strings(message.field("keep", list), "keep", MAX_KEEP))
        tombstones = message.field("tombstones", list)
        if len(tombstones) > PURGE_BATCH:
            raise WireError(f"gc.sweep: at most {PURGE_BATCH} tombstones")
        purge = []
        for raw in tombstones:
            if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str):
                raise WireError("gc.sweep: each tombstone must be [key, siblings]")
            siblings = siblings_from_wire(raw[1])
            tombstones_only = bool(siblings) and all(s.tombstone for s in siblings)
            if placement_of(raw[0]) is None or not tombstones_only:
                raise WireError("gc.sweep: only tombstones of replicated keys are purged")
            purge.append((raw[0], siblings))
        mark = self._marks.pop(round_id, None)
        if not round_id.startswith(self._coordinator.cluster.self_id + ":"):
            self._swept_by_other_at = self._monotonic()
        if generation > self.state.accounted:
            raise RpcError("bad_round", f"round {generation} was not begun here")
        try:
            blocks = [] if mark is None else await self._run(self._unreferenced, keep)
            tombstones = await self._run(self._still_purgeable, purge)
            # The round number is recorded before anything is deleted, and only if something
            # will be: data from before it may then lack what this sweep removes
            # (peer.repair.horizon).
            if (blocks or tombstones) and generation > self.state.swept:
                self.state.swept = generation
                await self.save()
            removed, size = (0, 0) if mark is None else await self._run(self._remove, blocks, mark)
            purged = await self._run(self._purge, tombstones)
            if self._reserve is not None and (removed or purged):
                await self._run(self._reserve.keep)  # taken again once there is room
        finally:
            if mark is not None:
                self._replica.activity.done(mark)
        return {"removed": removed, "bytes": size, "purged": purged}

    def _unreferenced(self, keep: set[str]) -> list[str]:
        """Blocks here that nothing keeps and that are older than the grace."""
        blocks = self._replica.blocks
        cutoff = self._wall_clock() - self._grace
        found = []
        for block in blocks.hashes():
            used = blocks.last_used(block) if block not in keep else None
            if used is not None and used <= cutoff:
                found.append(block)
        return found

    def _remove(self, candidates: list[str], mark: int) -> tuple[int, int]:
        """Delete each candidate unless it was stored or touched since `mark`."""
        blocks = self._replica.blocks
        removed = size = 0
        for block in candidates:
            length = blocks.size(block) or 0
            if self._replica.activity.delete_unless_noted(block, mark, blocks.delete):
                removed += 1
                size += length
        return removed, size

    def _still_purgeable(
        self, tombstones: list[tuple[str, list[Sibling]]]
    ) -> list[tuple[str, list[Sibling]]]:
        records = self._replica.records
        held = [(key, mine, records.get(key)) for key, mine in tombstones]
        return [(key, mine) for key, mine, here in held if here and undoes_nothing(here, mine)]

    def _purge(self, tombstones: list[tuple[str, list[Sibling]]]) -> int:
        records = self._replica.records
        return sum(
            1
            for key, mine in tombstones
            if records.delete_if(key, lambda current, mine=mine: undoes_nothing(current, mine))
        )


def undoes_nothing(theirs: list[Sibling], mine: list[Sibling]) -> bool:
    """Whether a peer holding `theirs` could not bring back what `mine` (tombstones) deleted."""
    if not theirs:
        return True
    return all(s.tombstone for s in theirs) and not missing_siblings(theirs, mine)


def _strings(value: Any, name: str, limit: int = MAX_KEEP) -> list[str]:
    if not isinstance(value, list) or len(value) > limit:
        raise WireError(f"gc: {name} must be a list of at most {limit} strings")
    if not all(isinstance(v, str) and len(v) <= 128 for v in value):
        raise WireError(f"gc: {name} must hold short strings")
    return value
