"""Anti-entropy: replicas compare digests and exchange only what differs, so every key and
block ends up on all of its N home replicas whatever was missed (writes during an outage,
a peer gone for good, a peer that joined).

Each round this peer takes the next up peer in turn and, for records and then blocks, sends
the bucket digests of what both of them should hold (`peer.repair.digest`). The partner answers
with the buckets that differ; only those buckets' items travel, both ways. A peer's
placement view ignores peers dead for longer than the re-replication delay, so their share
gets new homes and the exchanges between the new and the surviving homes copy it there.

Handing data over: items this peer holds but is no longer a home of (after a join, a leave, or
after a stand-in's hint was delivered) are sent to every one of their N homes that lacks them,
and deleted here only once every home is up and confirms it holds them (records: siblings that
descend ours; blocks: a stored copy), and only if nothing was written here since that check.

Filling a new home: a peer that joined empty or was rebuilt pulls, from every other peer, every
item that peer holds of which it is now a home (`ae.pull`): records before it counts as ready,
blocks after (peer.repair.rejoin).

Every exchange compares the two peers' collection rounds (peer.repair.horizon): a peer whose data
predates a sweep it missed is refused, and it rebuilds itself when it learns so.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gossip.wire import Message, WireError
from peer.coordinator import Coordinator
from peer.errors import NotFound
from peer.quorum import missing_siblings
from peer.repair.digest import BUCKETS, DigestTree, record_digest, shared_homes
from peer.replica import (
    HINT_PREFIX,
    LOCAL_PREFIX,
    Replica,
    RunInThread,
    block_age,
    sibling_to_wire,
    siblings_from_wire,
)
from peer.ring import HashRing
from peer.rpc import Handler, RpcError
from storage.blocks import BlockError
from storage.fsutil import StorageFull
from storage.records import RecordStore, Sibling

log = logging.getLogger(__name__)

RECORDS = "records"
BLOCKS = "blocks"
HANDOVER_BATCH = 200
MAX_EXCHANGE_ITEMS = 5_000
PULL_PAGE = 500
PULL_SCAN = 5_000  # items looked at per ae.pull call, whatever it finds
STALE = "stale"
FULL_SCAN_EVERY = 30  # record scans between two that read every record: a check on the cache
MAX_CACHED_DIGESTS = 250_000  # records whose digests are kept between scans (~200 B each)
SCAN_SLICE = 500  # items a scan looks at between two pauses (see let_reactor_run)
REACTOR_TURN = 0.0002  # seconds a scan's thread sleeps at each pause


def let_reactor_run() -> None:
    """A pause for a scan's worker thread, so the reactor takes the GIL. A pure-Python scan
    otherwise keeps it for the interpreter's switch interval (5 ms) every time the reactor asks
    for it back, which a 4 KiB write does dozens of times: 3-peer put loop under anti-entropy,
    60 of ~7,000 puts over 20 ms, all in the second after each round began. A select with no
    descriptors, not time.sleep: under libfaketime moving the wall clock only (the chaos
    suite's clock faults) every time.sleep fails with EINVAL (wolfcw/libfaketime#426)."""
    select.select([], [], [], REACTOR_TURN)


def placement_of(key: str) -> str | None:
    """The ring key a record is placed by; None for records that stay local (hints, this
    peer's own bookkeeping)."""
    if key.startswith((HINT_PREFIX, LOCAL_PREFIX)):
        return None
    if key.startswith("f:"):
        return key[2:]
    if key.startswith("e:"):
        return key[2:].rsplit("\0", 1)[0]
    return key


class RecordDigests:
    """The digest of every local replicated record, kept between scans. Every exchange scans
    on both sides, and reading and digesting every record each time cost a peer holding
    ~30,000 records half of a core (profiled), and delayed 4 KiB writes by tens of ms for
    seconds after each round. Now a scan reads only the keys the store reports written since
    the last one, and every FULL_SCAN_EVERY-th scan (or when the store lost count) reads
    them all. Thread-safe: scans run in worker threads."""

    def __init__(self, records: RecordStore, pause: Callable[[], None] = lambda: None) -> None:
        """`pause` is called every SCAN_SLICE records a full read digests."""
        self._records = records
        self._pause = pause
        self._lock = threading.Lock()
        self._digests: dict[str, tuple[bytes, str]] | None = None  # key -> digest, placement
        self._scans = 0
        self.full_scans = 0

    def items(self) -> list[tuple[str, bytes, str]]:
        """(key, digest, placement) of every replicated record held now."""
        with self._lock:
            changed = self._records.take_changes()
            if self._digests is None or changed is None or self._scans >= FULL_SCAN_EVERY:
                self._digests = self._read_all()
                self._scans = 0
                self.full_scans += 1
            else:
                self._refresh(self._digests, changed)
                self._scans += 1
            digests = self._digests
            if len(digests) > MAX_CACHED_DIGESTS:
                self._digests = None  # too many to keep: the next scan reads them all again
            return [(key, digest, placement) for key, (digest, placement) in digests.items()]

    def _read_all(self) -> dict[str, tuple[bytes, str]]:
        digests = {}
        for count, (key, siblings) in enumerate(self._records.range(), 1):
            placement = placement_of(key)
            if siblings and placement is not None:
                digests[key] = (record_digest(key, siblings), placement)
            if count % SCAN_SLICE == 0:
                self._pause()
        return digests

    def _refresh(self, digests: dict[str, tuple[bytes, str]], changed: set[str]) -> None:
        placements = {key: at for key in changed if (at := placement_of(key)) is not None}
        current = self._records.get_many(list(placements))
        for key, placement in placements.items():
            siblings = current.get(key)
            if siblings:
                digests[key] = (record_digest(key, siblings), placement)
            else:
                digests.pop(key, None)


class HomesCache:
    """The N homes of each placement on one ring, kept between scans: every exchange scans
    several times on both peers, and walking the ring for every key each time was a third of
    a scan (profiled). A different ring (membership changed) or N starts afresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ring: HashRing | None = None
        self._n = 0
        self._homes: dict[str, tuple[str, ...]] = {}

    def on(self, ring: HashRing, n: int) -> Callable[[str], tuple[str, ...]]:
        """`placement` -> its homes on `ring` (thread-safe: scans run in worker threads)."""
        with self._lock:
            if ring is not self._ring or n != self._n or len(self._homes) > MAX_CACHED_DIGESTS:
                self._ring, self._n, self._homes = ring, n, {}
            homes = self._homes

        def homes_of(placement: str) -> tuple[str, ...]:
            found = homes.get(placement)
            if found is None:
                found = homes[placement] = tuple(ring.preference(placement, n))
            return found

        return homes_of


@dataclass
class RepairCounters:
    """What anti-entropy did, for /metrics and /v1/cluster."""

    rounds: int = 0
    ticks: int = 0  # times the round timer fired (also while a slow round still runs)
    digest_bytes: int = 0
    records_received: int = 0
    records_sent: int = 0
    blocks_pulled: int = 0
    blocks_pushed: int = 0
    bytes_moved: int = 0
    handed_over: int = 0
    under_replicated: int = 0
    errors: int = 0
    last_round_at: float | None = None
    partners: dict[str, float] = field(default_factory=dict)


@dataclass
class _Scan:
    """One pass over the local store relative to one partner."""

    tree: DigestTree
    orphans: list[str]  # keys (or block hashes) this peer holds but is not a home of
    under_replicated: int


class AntiEntropy:
    """Runs exchange rounds as the initiator and serves the partner side (`handlers`)."""

    def __init__(
        self,
        coordinator: Coordinator,
        replica: Replica,
        run_in_thread: RunInThread,
        clock: Callable[[], float],
        rounds: Callable[[], tuple[int, int]] = lambda: (0, 0),
        on_stale: Callable[[str], Any] = lambda reason: None,
        may_exchange: Callable[[], bool] = lambda: True,
        pause: Callable[[], None] = lambda: None,
    ) -> None:
        """`rounds` gives this peer's (accounted, swept) collection rounds; `on_stale` is told
        when a partner shows this peer's data predates a sweep it missed; rounds start only once
        `may_exchange()` (this peer's rounds were compared with the cluster's); a scan calls
        `pause` every SCAN_SLICE items (a peer: let_reactor_run)."""
        self._coordinator = coordinator
        self._replica = replica
        self._run = run_in_thread
        self._now = clock
        self._rounds = rounds
        self._on_stale = on_stale
        self._may_exchange = may_exchange
        self._turn = 0
        self._running = False
        self.counters = RepairCounters()
        self._pause = pause
        self.record_digests = RecordDigests(replica.records, pause)
        self._homes = HomesCache()

    @property
    def _me(self) -> str:
        return self._coordinator.cluster.self_id

    def handlers(self) -> dict[str, Handler]:
        """The RPC methods partners call."""
        served = {
            "ae.digest": self._serve_digest,
            "ae.records": self._serve_records,
            "ae.blocks": self._serve_blocks,
            "ae.pull": self._serve_pull,
        }
        return {name: self._replica.verified_only(handler) for name, handler in served.items()}

    # -- scanning (in a thread; the ring is an immutable snapshot) ---------------------------

    def _ring(self) -> tuple[HashRing, int, set[str]]:
        cluster = self._coordinator.cluster
        ring = cluster.ring()
        up = {node for node in ring.members if cluster.is_up(node)}
        return ring, self._coordinator.settings.n, up

    def _scan(self, kind: str, partner: str, ring: HashRing, n: int, up: set[str]) -> _Scan:
        entries: list[tuple[str, bytes]] = []
        orphans: list[str] = []
        under = 0
        homes_of = self._homes.on(ring, n)
        me = self._me
        for count, (key, digest, placement) in enumerate(self.local_items(kind), 1):
            homes = homes_of(placement)
            if me not in homes:
                orphans.append(key)
            else:
                if not up.issuperset(homes):
                    under += 1
                if shared_homes(homes, me, partner):
                    entries.append((key, digest))
            if count % SCAN_SLICE == 0:
                self._pause()
        return _Scan(DigestTree.build(entries), orphans, under)

    def local_items(self, kind: str) -> Iterator[tuple[str, bytes, str]]:
        """(key, item digest, placement) of every replicated local item of `kind`."""
        if kind == RECORDS:
            yield from self.record_digests.items()
        else:
            for block in self._replica.blocks.hashes():
                yield block, bytes.fromhex(block), block

    # -- initiator -------------------------------------------------------------------------

    async def run_round(self) -> None:
        """Exchange with the next up peer (each peer in turn), records then blocks."""
        self.counters.ticks += 1
        if self._running or not self._may_exchange():
            return
        self._running = True
        try:
            ring, n, up = self._ring()
            partners = sorted(up - {self._me})
            if not partners:
                return
            partner = partners[self._turn % len(partners)]
            self._turn += 1
            under = 0
            for kind in (RECORDS, BLOCKS):
                scan = await self._run(self._scan, kind, partner, ring, n, up)
                under += scan.under_replicated
                await self._exchange(kind, partner, scan)
                await self._hand_over(kind, scan.orphans[:HANDOVER_BATCH], ring, n, up)
            self.counters.under_replicated = under
            self.counters.rounds += 1
            now = self._now()
            self.counters.last_round_at = now
            self.counters.partners[self._coordinator.cluster.name_of(partner)] = now
        except (RpcError, WireError, BlockError, StorageFull) as e:
            self.counters.errors += 1
            log.info("anti-entropy round stopped: %s", e)
        finally:
            self._running = False

    async def _exchange(self, kind: str, partner: str, scan: _Scan) -> None:
        digests = scan.tree.digests()
        self.counters.digest_bytes += BUCKETS * 32
        accounted, swept = self._rounds()
        reply = await self._coordinator.call(
            partner,
            "ae.digest",
            {"kind": kind, "partner": self._me, "digests": digests, "accounted": accounted},
        )
        if STALE in reply:
            self._refused(partner, reply[STALE])
        # Race-free: every peer of the round we swept had begun it before we swept it.
        if int(reply.get("accounted", swept)) < swept:
            raise RpcError(STALE, "the partner's data predates a sweep it missed")
        differ = [b for b in reply["differ"] if isinstance(b, int) and 0 <= b < BUCKETS]
        if not differ:
            return
        keys = scan.tree.keys_in(differ)[:MAX_EXCHANGE_ITEMS]
        if kind == RECORDS:
            items = await self._run(self._items_for, keys)
            self.counters.records_sent += len(items)
            reply = await self._coordinator.call(
                partner, "ae.records", {"partner": self._me, "buckets": differ, "items": items}
            )
            self.counters.records_received += await self._run(self._merge, reply["items"])
        else:
            reply = await self._coordinator.call(
                partner, "ae.blocks", {"partner": self._me, "buckets": differ, "hashes": keys}
            )
            theirs = {h for h in reply["hashes"] if isinstance(h, str)}
            await self._sync_blocks(partner, set(keys), theirs)

    def _refused(self, partner: str, swept: Any) -> None:
        """The partner refused to exchange: the round numbers we sent predate round `swept`,
        which it swept. Stale only if they still do now: a round that began here after we
        sent them (and that the partner swept before it answered) is accounted for by now,
        as every peer of a round begins it before any peer sweeps it. Raises either way."""
        if not isinstance(swept, int) or isinstance(swept, bool):
            raise WireError("ae.digest: stale must be a round number")
        accounted, _ = self._rounds()
        name = self._coordinator.cluster.name_of(partner)
        if accounted >= swept:
            raise RpcError(STALE, f"{name} swept round {swept} after we began it: next round")
        reason = (
            f"{name}: this peer's data was last accounted for in collection round {accounted}, "
            f"before round {swept} was swept"
        )
        self._on_stale(reason)
        raise RpcError(STALE, reason)

    async def _sync_blocks(self, partner: str, mine: set[str], theirs: set[str]) -> None:
        for block in sorted(theirs - mine):
            try:
                reply = await self._coordinator.call(partner, "block.get", {"hash": block})
            except RpcError as e:
                if e.code != NotFound.error:
                    raise
                continue  # collected (or handed over) since the partner listed it
            data = reply.get("data")
            if isinstance(data, bytes):
                age = block_age(reply.get("age", 0.0))
                await self._replica.store_block(data, block, repair=True, age=age)
                self.counters.blocks_pulled += 1
                self.counters.bytes_moved += len(data)
        for block in sorted(mine - theirs):
            try:
                data = await self.push_block(partner, block)
            except BlockError:
                continue  # corrupt here (now quarantined): the partner keeps its copy
            self.counters.blocks_pushed += 1
            self.counters.bytes_moved += len(data)

    async def push_block(self, peer: str, block: str) -> bytes:
        """Send `peer` a repair copy of a local block (as old as ours); the bytes sent."""
        data, age = await self._replica.copy_of(block)
        args = {"hash": block, "data": data, "repair": True, "age": age}
        await self._coordinator.call(peer, "block.put", args)
        return data

    def _items_for(self, keys: list[str]) -> list[list[Any]]:
        records = self._replica.records
        return [[key, [sibling_to_wire(s) for s in records.get(key)]] for key in keys]

    def _merge(self, raw_items: Any) -> int:
        """Store received [key, siblings] items (the merge rule keeps what is newest)."""
        if not isinstance(raw_items, list) or len(raw_items) > MAX_EXCHANGE_ITEMS:
            raise WireError("anti-entropy items must be a list of at most 5000")
        items: list[tuple[str, Sibling]] = []
        for raw in raw_items:
            if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str):
                raise WireError("anti-entropy item must be [key, siblings]")
            if placement_of(raw[0]) is None:
                raise WireError("anti-entropy never carries local-only records")
            items += [(raw[0], sibling) for sibling in siblings_from_wire(raw[1])]
        before = [self._replica.records.get(key) for key, _ in items]
        after = self._replica.records.put_many(items)
        self.counters.bytes_moved += sum(len(s.value or b"") for _, s in items)
        return sum(1 for old, new in zip(before, after, strict=True) if old != new)

    # -- handing over what this peer no longer owns -------------------------------------------

    async def _hand_over(
        self, kind: str, orphans: list[str], ring: HashRing, n: int, up: set[str]
    ) -> None:
        """Give each orphan's homes what they lack, then drop it here once all hold it."""
        for key in orphans:
            homes = ring.preference(key if kind == BLOCKS else placement_of(key) or key, n)
            if len(homes) < n or not set(homes) <= up:
                continue
            if kind == BLOCKS:
                handed = await self._hand_over_block(key, homes)
            else:
                handed = await self._hand_over_record(key, homes)
            self.counters.handed_over += handed

    async def _hand_over_block(self, block: str, homes: list[str]) -> bool:
        mark = self._replica.activity.mark()
        try:
            for home in homes:
                args = {"hashes": [block], "repair": True}
                reply = await self._coordinator.call(home, "block.has", args)
                if reply.get("have") == [True]:
                    continue
                try:
                    await self.push_block(home, block)
                except BlockError:
                    return False  # unreadable here: the homes get it from elsewhere
            activity, blocks = self._replica.activity, self._replica.blocks
            return await self._run(activity.delete_unless_noted, block, mark, blocks.delete)
        finally:
            self._replica.activity.done(mark)

    async def _hand_over_record(self, key: str, homes: list[str]) -> bool:
        mine = await self._run(self._replica.records.get, key)
        if not mine:
            return False
        for home in homes:
            reply = await self._coordinator.call(home, "record.get", {"keys": [key]})
            missing = missing_siblings(siblings_from_wire(reply["records"][0]), mine)
            if missing:
                items = [[key, sibling_to_wire(s), None] for s in missing]
                await self._coordinator.call(home, "record.put", {"items": items})
        # Only if nothing was written here since `mine` was read: a newer write stays.
        return await self._run(self._replica.records.delete_if, key, mine.__eq__)

    # -- partner side ------------------------------------------------------------------------

    async def _serve_digest(self, message: Message) -> dict[str, Any]:
        kind, partner = self._kind_and_partner(message)
        digests = message.field("digests", list)
        if len(digests) != BUCKETS or not all(isinstance(d, bytes) for d in digests):
            raise WireError(f"ae.digest: digests must be {BUCKETS} byte strings")
        accounted, swept = self._rounds()
        if message.field("accounted", int, default=swept) < swept:
            return {STALE: swept}  # no exchange with data that predates our sweep
        ring, n, up = self._ring()
        scan = await self._run(self._scan, kind, partner, ring, n, up)
        self.counters.digest_bytes += BUCKETS * 32
        return {"differ": scan.tree.differing(digests), "accounted": accounted}

    async def _serve_records(self, message: Message) -> dict[str, Any]:
        _, partner = self._kind_and_partner(message, kind=RECORDS)
        buckets = self._buckets(message)
        received = await self._run(self._merge, message.field("items", list))
        self.counters.records_received += received
        ring, n, up = self._ring()
        scan = await self._run(self._scan, RECORDS, partner, ring, n, up)
        keys = scan.tree.keys_in(buckets)[:MAX_EXCHANGE_ITEMS]
        items = await self._run(self._items_for, keys)
        self.counters.records_sent += len(items)
        return {"items": items}

    async def _serve_blocks(self, message: Message) -> dict[str, Any]:
        _, partner = self._kind_and_partner(message, kind=BLOCKS)
        buckets = self._buckets(message)
        ring, n, up = self._ring()
        scan = await self._run(self._scan, BLOCKS, partner, ring, n, up)
        return {"hashes": scan.tree.keys_in(buckets)[:MAX_EXCHANGE_ITEMS]}

    async def _serve_pull(self, message: Message) -> dict[str, Any]:
        """A page of the items held here of which the partner is a home (records with their
        siblings, blocks by hash), in key order after `after`; `next` is None at the end."""
        kind, partner = self._kind_and_partner(message)
        after = message.field("after", str, default="")
        ring, n, _ = self._ring()

        def page() -> tuple[list[Any], str | None]:
            found: list[Any] = []
            last = None
            for scanned, (key, item, placement) in enumerate(self._items_after(kind, after)):
                if scanned >= PULL_SCAN or len(found) >= PULL_PAGE:
                    return found, last
                last = key
                if partner in ring.preference(placement, n):
                    found.append(item)
            return found, None

        items, following = await self._run(page)
        return {"items": items, "next": following}

    def _items_after(self, kind: str, after: str) -> Iterator[tuple[str, Any, str]]:
        """(key, what a pull sends of it, placement) of every replicated local item after
        `after`, in key order."""
        if kind == RECORDS:
            for key, siblings in self._replica.records.range(after + "\0" if after else ""):
                placement = placement_of(key)
                if placement is not None and siblings:
                    yield key, [key, [sibling_to_wire(s) for s in siblings]], placement
        else:
            for block in sorted(b for b in self._replica.blocks.hashes() if b > after):
                yield block, block, block

    async def pull_page(self, partner: str, kind: str, after: str) -> tuple[int, str | None]:
        """Pull from `partner` one page of the items of `kind` (RECORDS or BLOCKS) it holds of
        which this peer is a home and that this peer lacks, in key order after `after` (a
        joining or rebuilt peer filling its share); returns the items stored and the key to go
        on after, None once the partner has nothing more."""
        args = {"kind": kind, "partner": self._me, "after": after}
        reply = await self._coordinator.call(partner, "ae.pull", args)
        items = reply["items"]
        if kind == RECORDS:
            stored = await self._run(self._merge, items)
            self.counters.records_received += stored
        else:
            stored = await self._pull_blocks(partner, items)
        following = reply.get("next")
        if following is not None and (not isinstance(following, str) or following <= after):
            raise WireError("ae.pull: next must be a key after the last one")
        return stored, following

    async def _pull_blocks(self, partner: str, hashes: Any) -> int:
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise WireError("ae.pull: block items must be hashes")
        have = await self._run(lambda: [self._replica.blocks.has(h) for h in hashes])
        lacking = {h for h, got in zip(hashes, have, strict=True) if not got}
        await self._sync_blocks(partner, set(), lacking)
        return have.count(False)

    def _kind_and_partner(self, message: Message, kind: str | None = None) -> tuple[str, str]:
        kind = kind or message.field("kind", str)
        if kind not in (RECORDS, BLOCKS):
            raise WireError(f"{message.type}: unknown kind {kind[:20]!r}")
        return kind, message.field("partner", str)

    @staticmethod
    def _buckets(message: Message) -> list[int]:
        buckets = message.field("buckets", list)
        if not all(isinstance(b, int) and 0 <= b < BUCKETS for b in buckets):
            raise WireError(f"{message.type}: buckets must be integers below {BUCKETS}")
        return buckets
