"""The request coordinator: any peer runs a client's request against the replicas the ring picks.

Writes: blocks go to their replicas with a bounded window in flight, each block needing W
durable acks (replicas that already hold a block are not sent it again); then the manifest and
the directory entry are written with a vector clock that descends what the coordinator read, to
W replicas. Reads: R replies, reconciled by vector clock; replicas that turn out stale are
repaired in the background. The decisions live in `peer.quorum`; this module moves the calls.

A lookup reads a path's manifest, its entry and its ancestors' entries in one call per replica
(`read_groups`): a put learns which directories above it are missing (and creates them with
clocks descending what it read, so a directory removed elsewhere comes back) and a request that
is not the admin's gets the attributes for its permission checks (`peer.permissions`). No
directory state is cached between requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import blake3
from twisted.internet import defer

from gossip.wire import Message, WireError
from peer.body import BodyReader, PrefixedBody
from peer.cluster import ClusterView
from peer.errors import (
    BadRequest,
    ConflictingVersions,
    InsufficientStorage,
    IsADirectory,
    NotADirectory,
    NotFound,
    Unavailable,
)
from peer.lookup import Lookup, decode_entries, decode_manifests, permission_quorum
from peer.manifest import (
    DIRECTORY,
    DIRECTORY_MODE,
    FILE,
    FILE_MODE,
    INLINE_MAX,
    Attrs,
    Block,
    Entry,
    Manifest,
    entry_key,
    entry_name,
    entry_prefix,
    manifest_key,
    merge_versions,
)
from peer.paths import ROOT, ancestors, parent
from peer.permissions import (
    ADMIN_IDENTITY,
    EXECUTE,
    READ,
    WRITE,
    Identity,
    allows,
    new_attrs,
    require,
    require_remove,
    require_traverse,
)
from peer.pins import BlockPins
from peer.quorum import (
    CounterSource,
    QuorumError,
    QuorumTally,
    Target,
    context_of,
    missing_siblings,
    next_clock,
    plan_targets,
    reconcile,
)
from peer.replica import (
    STORAGE_FULL,
    UNREADABLE,
    Replica,
    sibling_to_wire,
    siblings_from_wire,
)
from peer.rpc import RpcClient, RpcError
from peer.versions import encode_version
from storage.records import Sibling
from storage.vclock import VectorClock

log = logging.getLogger(__name__)

BLOCK_WINDOW = 8  # blocks of one upload on their way to replicas, at most
BLOCKS_IN_FLIGHT = 16  # blocks of all uploads together: what a peer holds of them is bounded
MAX_READ_ATTEMPTS = 3
READ_AHEAD = 4
RPC_TIMEOUT = 10.0
BLOCK_TIMEOUT = 30.0
HAS_BATCH = 5_000

Groups = list[tuple[str, list[tuple[str, Sibling]]]]
Meta = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class QuorumSettings:
    """N, R, W and the block size of the cluster (R and W may be overridden per request)."""

    n: int
    r: int
    w: int
    block_size: int


@dataclass(frozen=True)
class StoredContent:
    """A file's content already stored: its blocks (or its inline bytes), the whole-file
    BLAKE3 hash and the size (put_file then writes only the manifest)."""

    blocks: tuple[Block, ...]
    blake3: str
    size: int
    inline: bytes | None = None


@dataclass(frozen=True)
class FileVersion:
    """The version of a file a read resolved to, with the context that supersedes what was seen."""

    manifest: Manifest
    version: str
    context: str


class QuorumCall:
    """One call fanned out to several targets; `decided` fires once the quorum outcome is known
    and `finished` once every target has answered (read-repair waits for that)."""

    def __init__(
        self,
        what: str,
        calls: dict[str, Awaitable[Any]],
        required: int,
        groups: list[frozenset[str]] | None = None,
        name_of: Callable[[str], str] = str,
    ) -> None:
        self.what = what
        self.tally = QuorumTally(groups or [frozenset(calls)], required)
        self.full: set[str] = set()  # targets that failed because their disk is full
        self._name_of = name_of
        self.decided: defer.Deferred[QuorumTally] = defer.Deferred()
        self.finished: defer.Deferred[QuorumTally] = defer.Deferred()
        if not calls or self.tally.impossible:
            self._settle()
        for node, call in calls.items():
            defer.ensureDeferred(self._track(node, call))

    async def _track(self, node: str, call: Awaitable[Any]) -> None:
        try:
            result = await call
        except (RpcError, WireError) as e:
            if isinstance(e, RpcError) and e.code == STORAGE_FULL:
                self.full.add(node)
            self.tally.failed(node, str(e))
        except Exception as e:
            log.exception("%s: call to %s failed", self.what, node)
            self.tally.failed(node, repr(e))
        else:
            self.tally.succeeded(node, result)
        self._settle()

    def _settle(self) -> None:
        tally = self.tally
        if not self.decided.called:
            if tally.met:
                self.decided.callback(tally)
            elif tally.impossible:
                self.decided.errback(
                    QuorumError(self.what, tally.required, len(tally.results), tally.failures)
                )
        if tally.complete and not self.finished.called:
            self.finished.callback(tally)

    async def result(self) -> QuorumTally:
        """The tally once the quorum is met; Unavailable when it cannot be, or
        InsufficientStorage when full disks are among the reasons."""
        try:
            return await self.decided
        except QuorumError as e:
            if self.full:
                names = sorted(self._name_of(node) for node in self.full)
                raise InsufficientStorage(
                    f"{self.what}: not acknowledged: no space left on {', '.join(names)} ({e})",
                    peers=names,
                ) from None
            raise Unavailable(str(e)) from None


class Coordinator:
    """Runs client operations through quorums of replicas."""

    def __init__(
        self,
        cluster: ClusterView,
        settings: QuorumSettings,
        local: Replica,
        connect: Callable[[str], RpcClient | None],
        name: str,
        clock: Callable[[], float] = time.time,
        counters: CounterSource | None = None,
    ) -> None:
        """`clock` is the wall clock (mtimes, the counter floor); `counters` issues this peer's
        version counters (a peer's persists its mark in the data directory)."""
        self.cluster = cluster
        self.settings = settings
        self.local = local
        self._connect = connect
        self.name = name
        self._now = clock
        self._counters = counters if counters is not None else CounterSource(clock)
        self.read_repairs = 0
        self.pins = BlockPins()
        self._blocks_in_flight = defer.DeferredSemaphore(BLOCKS_IN_FLIGHT)

    def now(self) -> float:
        """The coordinator's clock, in seconds (mtimes of what it writes)."""
        return self._now()

    def next_clock(self, base: VectorClock, current: list[Sibling]) -> VectorClock:
        """The clock of a new version this peer writes: descends `base` and `current`'s own
        entries, and never equals a clock this peer gave any other version."""
        me = self.cluster.self_id
        return self._counters.issued(next_clock(base, current, me, self._counters.floor()), me)

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self, node: str, method: str, args: dict[str, Any], timeout: float = RPC_TIMEOUT
    ) -> dict[str, Any]:
        """Run an RPC method on `node` (directly when it is this peer)."""
        if node == self.cluster.self_id:
            handler = self.local.handlers()[method]
            return await handler(Message(method, args))
        client = self._connect(node)
        if client is None:
            raise RpcError("unreachable", f"no address known for peer {node}")
        return await client.call(method, args, timeout)

    def targets(self, placement: str) -> list[Target]:
        """Where `placement`'s data goes now: up homes plus stand-ins for down ones."""
        preference = self.cluster.ring().preference(placement)
        return plan_targets(preference, self.cluster.is_up, self.settings.n)

    def settled_targets(self, placement: str, r: int) -> list[Target] | None:
        """Where a read of `placement` must also find R answers while some of its homes are
        still filling their share (joining, rebuilt): the targets the ring gives when those
        peers are left out, i.e. the peers that held the data before. None when no home is
        filling, or when too few peers are ready to matter (a cluster that starts empty)."""
        preference = self.cluster.ring().preference(placement)
        if all(self.cluster.is_ready(node) for node in preference[: self.settings.n]):
            return None
        ready = [node for node in preference if self.cluster.is_ready(node)]
        settled = plan_targets(ready, self.cluster.is_up, self.settings.n)
        return settled if len(settled) >= r else None

    def homes(self, placement: str) -> list[str]:
        """The first N peers of `placement`'s preference list, up or not."""
        return self.cluster.ring().preference(placement, self.settings.n)

    # -- records ---------------------------------------------------------------------------

    async def write_records(self, groups: Groups, w: int, what: str) -> None:
        """Store each group's items on W of the targets of the group's placement key.

        Items for one peer travel in one call whatever group they belong to, so a file's
        manifest and its directory entry cost one round trip per replica, not two.
        """
        per_node: dict[str, list[list[Any]]] = {}
        counted: list[frozenset[str]] = []
        for placement, items in groups:
            targets = self.targets(placement)
            for target in targets:
                batch = per_node.setdefault(target.node, [])
                batch += [[key, sibling_to_wire(s), target.hint_for] for key, s in items]
            counted.append(frozenset(t.node for t in targets))
        calls = {
            node: self.call(node, "record.put", {"items": items})
            for node, items in per_node.items()
        }
        quorum = QuorumCall(what, calls, w, counted, self.cluster.name_of)
        quorum.finished.addCallback(
            lambda tally: defer.ensureDeferred(self._keep_undelivered(per_node, tally, what))
        )
        await quorum.result()

    async def _keep_undelivered(
        self, sent: dict[str, list[list[Any]]], tally: QuorumTally, what: str
    ) -> None:
        """Store here, with a hint for the home it was meant for, every item a peer did not
        acknowledge, whatever the quorum's outcome: hinted handoff then completes the write
        once that home answers. A file's manifest and its directory entry have different homes,
        so a write that reached only some of them (a coordinator cut off mid-write) would
        otherwise leave one without the other for good: a listed file no read finds."""
        me = self.cluster.self_id
        for node in sorted(tally.failures.keys() - {me}):
            items = [[key, wire, hint_for or node] for key, wire, hint_for in sent[node]]
            try:
                await self.call(me, "record.put", {"items": items})
            except Exception as e:  # our own disk (full?): nothing more to do here
                log.warning("%s: cannot keep what %s did not take: %s", what, node, e)

    async def read_groups(
        self, groups: list[tuple[str, list[str]]], r: int, what: str
    ) -> list[list[list[Sibling]]]:
        """The reconciled siblings of each key of each (placement, keys) group, from R of the
        group's targets; keys for one peer travel in one call whatever group they belong to.
        Stale replicas among each group's homes get repaired in the background.

        A home still filling its share answers, but its answer is not trusted alone: R answers
        must also come from the peers that held the data before (`settled_targets`). A reply
        that shows a home filling for the first time makes the read start over knowing it.
        """
        for _ in range(MAX_READ_ATTEMPTS):
            found = await self._read_groups_once(groups, r, what)
            if found is not None:
                return found
        raise Unavailable(f"{what}: the replicas' readiness kept changing during the read")

    async def _read_groups_once(
        self, groups: list[tuple[str, list[str]]], r: int, what: str
    ) -> list[list[list[Sibling]]] | None:
        per_node: dict[str, list[str]] = {}
        positions: list[list[dict[str, int]]] = []
        counted: list[frozenset[str]] = []
        homes: list[set[str]] = []
        for placement, keys in groups:
            targets = self.targets(placement)
            settled = self.settled_targets(placement, r) or []
            counted.append(frozenset(t.node for t in targets))
            if settled:
                counted.append(frozenset(t.node for t in settled))
            homes.append({t.node for t in targets if t.hint_for is None})
            asked = list(dict.fromkeys(t.node for t in [*targets, *settled]))
            where_keys = []
            for key in keys:
                where: dict[str, int] = {}
                for node in asked:
                    batch = per_node.setdefault(node, [])
                    where[node] = len(batch)
                    batch.append(key)
                where_keys.append(where)
            positions.append(where_keys)
        calls = {
            node: self.call(node, "record.get", {"keys": keys}) for node, keys in per_node.items()
        }
        quorum = QuorumCall(what, calls, r, counted)
        try:
            tally = await quorum.result()
        except Unavailable:
            if len(counted) > len(groups):  # some home was believed to be filling
                await quorum.finished  # hear every reply: has that home become ready since?
            if any(self._learned_readiness(quorum.tally)):
                return None  # planned on readiness that changed: plan again
            raise
        filling, _ = self._learned_readiness(tally)
        if filling:
            return None
        current = [
            [reconcile(self._replies(tally, where).values()) for where in where_keys]
            for where_keys in positions
        ]
        quorum.finished.addCallback(self._repair_records, groups, positions, homes)
        return current

    def _learned_readiness(self, tally: QuorumTally) -> tuple[bool, bool]:
        """Note what each reply said about its peer's readiness; returns whether some peer
        planned as ready turned out to be filling, and whether some peer planned as filling
        turned out ready (either way the read was planned on stale knowledge)."""
        filling = ready_now = False
        for node, result in tally.results.items():
            ready = result.get("ready", True) is not False
            filling |= self.cluster.is_ready(node) and not ready
            ready_now |= ready and not self.cluster.is_ready(node)
            self.cluster.heard_ready(node, ready)
        return filling, ready_now

    async def read_records(self, placement: str, keys: list[str], r: int) -> list[list[Sibling]]:
        """The reconciled siblings of each key from R replicas; stale replicas get repaired."""
        (current,) = await self.read_groups([(placement, keys)], r, f"read {keys[0]}")
        return current

    async def lookup(self, path: str, r: int, *, entry: bool = True, above: bool = True) -> Lookup:
        """Read `path`'s manifest, (with `entry`) its directory entry and (with `above`) the
        entries of its ancestors, all in one call per replica."""
        groups = [(path, [manifest_key(path)])]
        if entry and path != ROOT:
            groups.append((parent(path), [entry_key(path)]))
        dirs = ancestors(path) if above else []
        groups += [(parent(d), [entry_key(d)]) for d in dirs]
        found = [keys[0] for keys in await self.read_groups(groups, r, f"read {path}")]
        manifest = found.pop(0)
        own = found.pop(0) if entry and path != ROOT else []
        return Lookup(path, manifest, own, list(zip(dirs, found, strict=True)))

    @staticmethod
    def _replies(tally: QuorumTally, where: dict[str, int]) -> dict[str, list[Sibling]]:
        return {
            node: siblings_from_wire(tally.results[node]["records"][index])
            for node, index in where.items()
            if node in tally.results
        }

    def _repair_records(
        self,
        tally: QuorumTally,
        groups: list[tuple[str, list[str]]],
        positions: list[list[dict[str, int]]],
        homes: list[set[str]],
    ) -> None:
        """Read-repair: give every home that replied the current siblings it lacks."""
        for (_, keys), where_keys, group_homes in zip(groups, positions, homes, strict=True):
            for key, where in zip(keys, where_keys, strict=True):
                replies = self._replies(tally, where)
                current = reconcile(replies.values())
                for node, have in replies.items():
                    missing = missing_siblings(have, current)
                    if missing and node in group_homes:
                        self.read_repairs += 1
                        items = [[key, sibling_to_wire(s), None] for s in missing]
                        repair = defer.ensureDeferred(
                            self.call(node, "record.put", {"items": items})
                        )
                        repair.addErrback(
                            lambda f, n=node: log.info("read-repair of %s: %s", n, f.value)
                        )

    async def scan_prefix(
        self,
        placement: str,
        prefix: str,
        r: int,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, list[Sibling]]:
        """Every key under `prefix` on `placement`'s replicas, reconciled across R replies;
        with `after` and `limit`, one page: the first `limit` keys after prefix + after.

        Each replica sends its own first `limit` keys; the first `limit` of their union are
        exactly the first `limit` keys of the reconciled listing (a key among those is among
        the first `limit` of every replica holding it), so a page costs O(limit) memory.
        """
        targets = self.targets(placement)
        settled = self.settled_targets(placement, r) or []
        groups = [frozenset(t.node for t in group) for group in (targets, settled) if group]
        nodes = list(dict.fromkeys(t.node for t in [*targets, *settled]))
        found = await self._scan(nodes, prefix, r, groups, after, limit)
        if limit is not None and len(found) > limit:
            found = {key: found[key] for key in sorted(found)[:limit]}
        return found

    async def scan_everywhere(self, prefix: str, r: int) -> dict[str, list[Sibling]]:
        """Every key under `prefix` on every up peer, for records placed by their own key: each
        key's N homes are among the peers asked, and at most N - R of them may fail to answer."""
        nodes = [n for n in sorted(self.cluster.ring().members) if self.cluster.is_up(n)]
        return await self._scan(nodes, prefix, max(1, len(nodes) - (self.settings.n - r)))

    async def _scan(
        self,
        nodes: list[str],
        prefix: str,
        required: int,
        groups: list[frozenset[str]] | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, list[Sibling]]:
        args: dict[str, Any] = {"prefix": prefix}
        if after is not None:
            args["after"] = after
        if limit is not None:
            args["limit"] = limit
        calls = {node: self.call(node, "record.range", args) for node in nodes}
        tally = await QuorumCall(f"list {prefix!r}", calls, required, groups).result()
        self._learned_readiness(tally)
        gathered: dict[str, list[list[Sibling]]] = {}
        for result in tally.results.values():
            for key, siblings in result["items"]:
                gathered.setdefault(key, []).append(siblings_from_wire(siblings))
        return {key: reconcile(replies) for key, replies in gathered.items()}

    # -- blocks ----------------------------------------------------------------------------

    async def store_block(self, block_hash: str, data: bytes, w: int) -> None:
        """Put one block on W of its targets; replicas that already hold it are not sent it."""
        calls = {
            target.node: self._store_block_on(target, block_hash, data)
            for target in self.targets(block_hash)
        }
        what = f"block {block_hash[:12]}"
        await QuorumCall(what, calls, w, name_of=self.cluster.name_of).result()

    async def _store_block_on(self, target: Target, block_hash: str, data: bytes) -> None:
        if target.hint_for is None:
            reply = await self.call(target.node, "block.has", {"hashes": [block_hash]})
            if reply["have"] == [True]:
                return
        args: dict[str, Any] = {"hash": block_hash, "data": data}
        if target.hint_for is not None:
            args["hint_for"] = target.hint_for
        await self.call(target.node, "block.put", args, timeout=BLOCK_TIMEOUT)

    async def fetch_block(self, block: Block) -> bytes:
        """The verified bytes of `block` from this peer's own store if it has them, else from
        the first replica (then any peer) that has them: a local copy costs no network hop and,
        over TLS, no encryption at either end.

        A replica whose copy failed verification or could not be read (its store moved the
        copy to quarantine) is given the good bytes in the background: repaired, not just
        skipped."""
        tried: list[str] = []
        bad: list[str] = []
        me = self.cluster.self_id
        candidates = [me] + [t.node for t in self.targets(block.hash) if t.node != me]
        candidates += [n for n in self.cluster.ring().members if n not in candidates]
        for node in candidates:
            if not self.cluster.is_up(node):
                continue
            try:
                reply = await self.call(node, "block.get", {"hash": block.hash}, BLOCK_TIMEOUT)
            except (RpcError, WireError) as e:
                tried.append(f"{self.cluster.name_of(node)}: {e}")
                if isinstance(e, RpcError) and e.code in ("corrupt", UNREADABLE):
                    bad.append(node)
                continue
            data = reply.get("data")
            # this peer's own store verified its copy as it read it (BlockStore.get)
            if isinstance(data, bytes) and (
                node == me or blake3.blake3(data).hexdigest() == block.hash
            ):
                self._repair_block(block.hash, data, bad)
                return data
            tried.append(f"{self.cluster.name_of(node)}: returned bytes that failed verification")
        raise Unavailable(f"block {block.hash} is on no reachable peer ({'; '.join(tried)})")

    def _repair_block(self, block_hash: str, data: bytes, nodes: list[str]) -> None:
        """Store a verified block again on `nodes`, whose copies were bad (in the background)."""
        for node in nodes:
            self.read_repairs += 1
            log.warning("block %s was bad on %s: storing it again", block_hash, node)
            repair = defer.ensureDeferred(
                self.call(node, "block.put", {"hash": block_hash, "data": data}, BLOCK_TIMEOUT)
            )
            repair.addErrback(
                lambda f, n=node: log.info("repair of block %s on %s: %s", block_hash, n, f.value)
            )

    async def _write_blocks(
        self, body: BodyReader, w: int, pinned: list[str]
    ) -> tuple[list[Block], str, int]:
        """Split `body` into blocks and store each; returns the blocks, the file hash, the size.
        Each block is pinned (appended to `pinned`) before it is sent; the caller releases the
        pins once the manifest that references them is durable, or the write failed. At most
        BLOCK_WINDOW blocks of this upload and BLOCKS_IN_FLIGHT of all are being stored."""
        window = defer.DeferredSemaphore(BLOCK_WINDOW)
        file_hash = blake3.blake3()
        blocks: list[Block] = []
        in_flight: list[defer.Deferred[None]] = []
        failures: list[Exception] = []
        size = 0
        while True:
            await window.acquire()
            if failures:
                window.release()
                break
            chunk = await body.read(self.settings.block_size)
            if not chunk:
                window.release()
                break
            # taken once the chunk is in: a slow client holds no slot while it trickles
            await self._blocks_in_flight.acquire()
            size += len(chunk)
            file_hash.update(chunk)
            block_hash = blake3.blake3(chunk).hexdigest()
            blocks.append(Block(block_hash, len(chunk)))
            self.pins.hold([block_hash])
            pinned.append(block_hash)
            stored = defer.ensureDeferred(self.store_block(block_hash, chunk, w))
            stored.addErrback(lambda f: failures.append(f.value))
            stored.addBoth(lambda _: (window.release(), self._blocks_in_flight.release()))
            in_flight.append(stored)
        await defer.DeferredList(in_flight)
        if failures:
            raise failures[0]
        return blocks, file_hash.hexdigest(), size

    # -- files -----------------------------------------------------------------------------

    async def put_file(
        self,
        path: str,
        body: BodyReader | StoredContent,
        *,
        mode: int | None = None,
        context: VectorClock | None = None,
        w: int | None = None,
        identity: Identity = ADMIN_IDENTITY,
        meta: Meta | Callable[[], Meta] = (),
    ) -> dict[str, Any]:
        """Store `body` at `path`; returns {"path","size","blake3","version"}.

        A new file gets `mode` (default 0644), `identity` as owner and its directory's group;
        missing directories above it are created. Rewriting a file keeps its owner and group,
        and its mode unless the owner (or an admin) gives one. The file's blocks are pinned
        against garbage collection from before each is sent until the manifest is durable.
        `body` is either the bytes to store or a `StoredContent`, blocks already on their
        replicas (an S3 multipart upload's parts, still referenced by the parts' manifests):
        then only the manifest is written. `meta` is stored with the content (a function
        giving it is called once the body has been read: an ETag computed from the bytes).
        """
        pinned: list[str] = []
        try:
            return await self._put_file(path, body, mode, context, w, identity, meta, pinned)
        finally:
            self.pins.release(pinned)

    async def _put_file(
        self,
        path: str,
        body: BodyReader | StoredContent,
        mode: int | None,
        context: VectorClock | None,
        w: int | None,
        identity: Identity,
        meta: Meta | Callable[[], Meta],
        pinned: list[str],
    ) -> dict[str, Any]:
        if path == ROOT:
            raise BadRequest("cannot write a file at the root directory")
        w = self._quorum(w, "w", self.settings.w)
        found = await self.lookup(path, self._permission_r(min(self.settings.r, w), identity))
        self._require_file_path(found)
        require_traverse(identity, found.traversed())
        current = found.manifest
        if context is not None:
            await self._check_context(path, context, current)
        versions = decode_manifests(path, current)
        now = self._now()
        groups: Groups = []
        attrs_clock: VectorClock | None = None
        if versions:
            merged = merge_versions(versions)
            old = merged.attrs_from.attrs
            require(identity, old, WRITE, path)
            attrs = old
            if mode is not None and (identity.admin or identity.user == old.owner):
                attrs = Attrs(old.owner, old.group, mode)
            if attrs == old:
                attrs_clock = merged.attrs_clock
        else:
            container, container_attrs = found.container()
            require(identity, container_attrs, WRITE | EXECUTE, container)
            attrs = new_attrs(identity, container_attrs, FILE_MODE if mode is None else mode)
            dir_attrs = new_attrs(identity, container_attrs, DIRECTORY_MODE)
            groups += self.directory_writes(found.ancestors, found.missing(), dir_attrs, now)
        inline: bytes | None = None
        if isinstance(body, StoredContent):
            blocks, file_hash, size = list(body.blocks), body.blake3, body.size
            inline = body.inline
        elif len(head := await body.read(INLINE_MAX + 1)) <= INLINE_MAX:
            inline = head
            blocks = []
            file_hash, size = blake3.blake3(head).hexdigest(), len(head)
        else:
            blocks, file_hash, size = await self._write_blocks(PrefixedBody(head, body), w, pinned)
        base = context if context is not None else context_of(current)
        clock = self.next_clock(base, current)
        manifest = Manifest(
            size,
            now,
            attrs.mode,
            file_hash,
            tuple(blocks),
            inline,
            owner=attrs.owner,
            group=attrs.group,
            writer=self.name,
            attrs_clock=attrs_clock,
            meta=meta() if callable(meta) else meta,
        )
        groups = self.file_writes(path, clock, manifest) + groups
        await self.write_records(groups, w, f"write {path}")
        return {"path": path, "size": size, "blake3": file_hash, "version": encode_version(clock)}

    async def _check_context(self, path: str, context: VectorClock, current: list[Sibling]) -> None:
        """BadRequest when `context` carries a counter above every stored version of `path`.

        A context comes from a read of the key, so it names no counter beyond the merge of the
        versions stored there; a crafted one would otherwise push this peer's counters to
        their end. The quorum read may have missed the replica holding the newest version, so
        every target is asked before a context is refused."""
        if context_of(current).descends(context):
            return
        key = manifest_key(path)
        calls = {
            target.node: self.call(target.node, "record.get", {"keys": [key]})
            for target in self.targets(path)
        }
        tally = await QuorumCall(f"check the context of {path}", calls, 0).finished
        stored = list(current)
        for reply in tally.results.values():
            stored += siblings_from_wire(reply["records"][0])
        seen = context_of(stored)
        beyond = sorted(
            f"{self.cluster.name_of(node)[:40]!r}={counter} (stored: {seen.entries.get(node, 0)})"
            for node, counter in context.entries.items()
            if counter > seen.entries.get(node, 0)
        )
        if beyond:
            raise BadRequest(
                f"X-Qfs-Version: the context names counters no stored version of {path} has "
                f"({', '.join(beyond[:4])}); read the file again and write with its context"
            )

    @staticmethod
    def _require_file_path(found: Lookup) -> None:
        """IsADirectory when a directory is at the path, NotADirectory when a file is above."""
        if not found.is_file and found.directory() is not None:
            raise IsADirectory(f"{found.path} is a directory")
        above = found.file_above()
        if above is not None:
            raise NotADirectory(f"{above} is a file, not a directory")

    @staticmethod
    def file_writes(path: str, clock: VectorClock, manifest: Manifest | None) -> Groups:
        """The record writes of one file version (None: a deletion): manifest and entry."""
        value = None if manifest is None else manifest.encode()
        entry = None if manifest is None else Entry.of_file(manifest).encode()
        return [
            (path, [(manifest_key(path), Sibling(clock, value))]),
            (parent(path), [(entry_key(path), Sibling(clock, entry))]),
        ]

    def directory_writes(
        self,
        found: list[tuple[str, list[Sibling]]],
        create: list[str],
        attrs: Attrs,
        now: float,
        moving_from: str | None = None,
    ) -> Groups:
        """Entry writes creating each directory of `create` ((directory, siblings) read in
        `found`), each with a clock that descends what was read there."""
        siblings = dict(found)
        writes: Groups = []
        for directory in create:
            seen = siblings.get(directory, [])
            clock = self.next_clock(context_of(seen), seen)
            entry = Entry.directory(attrs, now, moving_from)
            record = (entry_key(directory), Sibling(clock, entry.encode()))
            writes.append((parent(directory), [record]))
        return writes

    async def resolve(
        self,
        path: str,
        version: str | None,
        r: int | None,
        identity: Identity = ADMIN_IDENTITY,
        want: int = READ,
    ) -> FileVersion:
        """The manifest a read of `path` serves: NotFound, Forbidden without `want` on it, or
        ConflictingVersions when contents were written concurrently unless `version` picks one.
        Siblings that differ only in owner, group or mode merge into one version."""
        r = self._permission_r(self._quorum(r, "r", self.settings.r), identity)
        found = await self.lookup(path, r, entry=False, above=not identity.admin)
        return self.file_version(found, version, identity, want)

    def file_version(
        self, found: Lookup, version: str | None, identity: Identity, want: int
    ) -> FileVersion:
        """The version of a file a lookup found (see resolve)."""
        path = found.path
        values = decode_manifests(path, found.manifest)
        if not values:
            raise NotFound(f"no file at {path}")
        require_traverse(identity, found.traversed())
        context = encode_version(context_of(found.manifest))
        merged = merge_versions(values)
        attrs = merged.attrs_from.attrs  # every sibling's owner, group and mode are these
        require(identity, attrs, want, path)
        if version is not None:
            for clock, manifest in values:
                if encode_version(clock) == version:
                    return FileVersion(manifest.with_attrs(attrs), version, context)
            raise NotFound(f"{path} has no version {version}")
        if len(merged.heads) > 1:
            readable = allows(identity, attrs, READ)  # a stat needs no r: no hashes without it
            raise ConflictingVersions(
                f"{path} has {len(merged.heads)} concurrent versions; read one with ?version= "
                "or write with X-Qfs-Version set to the context to resolve them",
                path=path,
                version=context,
                siblings=[self._sibling_summary(c, m, readable) for c, m in merged.heads],
            )
        ((clock, head),) = merged.heads
        text = encode_version(clock) if len(values) == 1 else context
        return FileVersion(head.with_attrs(attrs), text, context)

    @staticmethod
    def _sibling_summary(clock: VectorClock, manifest: Manifest, readable: bool) -> dict[str, Any]:
        summary = {
            "version": encode_version(clock),
            "size": manifest.size,
            "blake3": manifest.blake3,
            "mtime": manifest.mtime,
            "writer": manifest.writer,
        }
        if not readable:
            del summary["blake3"]
        return summary

    async def stream(self, manifest: Manifest) -> AsyncIterator[bytes]:
        """The file's bytes block by block, verified, fetching a few blocks ahead."""
        if manifest.inline is not None:
            yield manifest.inline
            return
        pending: list[defer.Deferred[bytes]] = []
        upcoming = iter(manifest.blocks)
        for block in upcoming:
            pending.append(defer.ensureDeferred(self.fetch_block(block)))
            if len(pending) >= READ_AHEAD:
                break
        try:
            while pending:
                data = await pending.pop(0)
                following = next(upcoming, None)
                if following is not None:
                    pending.append(defer.ensureDeferred(self.fetch_block(following)))
                yield data
        finally:
            for waiting in pending:
                waiting.addErrback(lambda _: None)

    async def delete_file(
        self, path: str, w: int | None = None, identity: Identity = ADMIN_IDENTITY
    ) -> None:
        """Write tombstones (manifest and entry) that descend every version read."""
        w = self._quorum(w, "w", self.settings.w)
        r = self._permission_r(min(self.settings.r, w), identity)
        found = await self.lookup(path, r, above=not identity.admin)
        current = found.manifest
        versions = decode_manifests(path, current)
        if not versions:
            if found.directory() is not None:
                raise IsADirectory(f"{path} is a directory; remove it with rmdir")
            raise NotFound(f"no file at {path}")
        require_traverse(identity, found.traversed())
        container, container_attrs = found.container()
        attrs = merge_versions(versions).attrs_from.attrs
        require_remove(identity, container, container_attrs, path, attrs)
        clock = self.next_clock(context_of(current), current)
        await self.write_records(self.file_writes(path, clock, None), w, f"delete {path}")

    async def list_directory(
        self, directory: str, r: int | None = None, identity: Identity = ADMIN_IDENTITY
    ) -> list[dict[str, Any]]:
        """Every entry of `directory` in one list (see list_page for pages)."""
        entries, _ = await self.list_page(directory, r, identity)
        return entries

    async def list_page(
        self,
        directory: str,
        r: int | None = None,
        identity: Identity = ADMIN_IDENTITY,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Entries of `directory` in name order: name, type, size, mtime, mode, owner, group
        (and conflict when a file has concurrently written contents). With `limit`, at most
        `limit` names after `after`, and the name to continue after when there may be more
        (a page can hold fewer live entries than `limit`: deleted names count)."""
        r = self._quorum(r, "r", self.settings.r)
        if not identity.admin:
            at = await self.lookup(directory, self._permission_r(r, identity))
            merged = at.directory()
            if merged is None:
                raise NotFound(f"no directory at {directory}")
            require_traverse(identity, at.traversed())
            require(identity, merged.attrs_from.attrs, READ, directory)
        found = await self.scan_prefix(
            directory, entry_prefix(directory), r, after=after, limit=limit
        )
        keys = sorted(found)
        entries = [entry for key in keys if (entry := listing_entry(key, found[key])) is not None]
        if not entries and directory != ROOT and identity.admin:
            await self._require_directory(directory, r)
        more = limit is not None and len(keys) >= limit
        return entries, entry_name(keys[-1]) if more else None

    async def pages(
        self,
        directory: str,
        r: int | None = None,
        identity: Identity = ADMIN_IDENTITY,
        *,
        limit: int,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every entry of `directory`, a `list_page` of at most `limit` names at a time."""
        after = None
        while True:
            entries, after = await self.list_page(directory, r, identity, after=after, limit=limit)
            yield entries
            if after is None:
                return

    async def _require_directory(self, directory: str, r: int) -> None:
        found = await self.lookup(directory, r, above=False)
        if found.directory() is None:
            raise NotFound(f"no directory at {directory}")

    async def stat(
        self, path: str, r: int | None = None, identity: Identity = ADMIN_IDENTITY
    ) -> dict[str, Any]:
        """Metadata of the file or directory at `path`; for a file, per block, the peers
        holding a copy. Needs x on the directories above, nothing on the path itself."""
        r = self._permission_r(self._quorum(r, "r", self.settings.r), identity)
        found = await self.lookup(path, r, above=not identity.admin)
        if not found.is_file:
            merged = found.directory()
            if merged is None:
                raise NotFound(f"no file or directory at {path}")
            require_traverse(identity, found.traversed())
            entry = merged.attrs_from
            return {
                "path": path,
                "type": DIRECTORY,
                "size": 0,
                "mtime": entry.mtime,
                **entry.attrs.to_json(),
                "version": encode_version(context_of(found.entry)),
                "replicas": [self.cluster.name_of(n) for n in self.homes(parent(path))],
                "blocks": [],
            }
        resolved = self.file_version(found, None, identity, 0)
        manifest = resolved.manifest
        hashes = sorted({b.hash for b in manifest.blocks})
        holders = await self._holders(hashes) if hashes else {}
        stat = {
            "path": path,
            "type": FILE,
            "size": manifest.size,
            "blake3": manifest.blake3,
            "mtime": manifest.mtime,
            **manifest.attrs.to_json(),
            "version": resolved.version,
            "inline": manifest.inline is not None,
            "replicas": [self.cluster.name_of(n) for n in self.homes(path)],
            "blocks": [
                {"hash": b.hash, "size": b.size, "holders": holders.get(b.hash, [])}
                for b in manifest.blocks
            ],
        }
        if not allows(identity, manifest.attrs, READ):  # hashes tell content: they need r
            del stat["blake3"]
            for block in stat["blocks"]:
                del block["hash"]
        return stat

    async def _holders(self, hashes: list[str]) -> dict[str, list[str]]:
        """Block hash -> names of up peers that hold it (asking also marks them used)."""
        peers = [n for n in sorted(self.cluster.ring().members) if self.cluster.is_up(n)]
        holders: dict[str, list[str]] = {}
        for start in range(0, len(hashes), HAS_BATCH):
            chunk = hashes[start : start + HAS_BATCH]
            calls = {n: self.call(n, "block.has", {"hashes": chunk}) for n in peers}
            tally = await QuorumCall("stat", calls, 0).finished
            for node, reply in sorted(tally.results.items()):
                for block_hash, have in zip(chunk, reply["have"], strict=False):
                    if have:
                        holders.setdefault(block_hash, []).append(self.cluster.name_of(node))
        return holders

    async def touch_blocks(self, hashes: list[str]) -> None:
        """Mark blocks used on every peer holding them, before a new manifest refers to them
        (a move or copy), so garbage collection spares them while the manifest moves between
        peers: the collector skips blocks used within its grace period."""
        await self._holders(sorted(set(hashes)))

    def _permission_r(self, r: int, identity: Identity) -> int:
        return permission_quorum(r, self.settings.r, identity.admin)

    def _quorum(self, given: int | None, name: str, default: int) -> int:
        if given is None:
            return default
        if not 1 <= given <= self.settings.n:
            raise BadRequest(f"{name}={given} must be between 1 and N={self.settings.n}")
        return given


def listing_entry(key: str, siblings: list[Sibling]) -> dict[str, Any] | None:
    """One name of a listing from its entry siblings (None when it is deleted). A directory
    wins over a file created concurrently under the same name (flagged as a conflict)."""
    values = decode_entries(key, siblings)
    if not values:
        return None
    dirs = [(c, e) for c, e in values if e.type == DIRECTORY]
    files = [(c, e) for c, e in values if e.type == FILE]
    merged = merge_versions(dirs or files)
    newest = max((e for _, e in merged.heads), key=lambda e: e.mtime)
    entry: dict[str, Any] = {
        "name": entry_name(key),
        "type": newest.type,
        "size": newest.size,
        "mtime": newest.mtime,
        **merged.attrs_from.attrs.to_json(),
    }
    if newest.etag is not None:
        entry["etag"] = newest.etag
    if len(merged.heads) > 1 or (dirs and files):
        entry["conflict"] = True
    return entry
