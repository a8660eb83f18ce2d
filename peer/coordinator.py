"""The request coordinator: any peer runs a client's request against the replicas the ring picks.

Writes: blocks go to their replicas with a bounded window in flight, each block needing W
durable acks (replicas that already hold a block are not sent it again); then the manifest and
the directory entry are written with a vector clock that descends what the coordinator read, to
W replicas. Reads: R replies, reconciled by vector clock; replicas that turn out stale are
repaired in the background. The decisions live in `peer.quorum`; this module moves the calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import blake3
from twisted.internet import defer

from gossip.wire import Message, WireError
from peer.cluster import ClusterView
from peer.errors import BadRequest, ConflictingVersions, NotFound, Unavailable
from peer.manifest import (
    DIRECTORY,
    FILE,
    INLINE_MAX,
    Block,
    Entry,
    Manifest,
    entry_key,
    entry_name,
    entry_prefix,
    manifest_key,
)
from peer.paths import ROOT, ancestors, parent
from peer.quorum import (
    QuorumError,
    QuorumTally,
    Target,
    context_of,
    live,
    missing_siblings,
    next_clock,
    plan_targets,
    reconcile,
)
from peer.replica import Replica, sibling_to_wire, siblings_from_wire
from peer.rpc import RpcClient, RpcError
from peer.versions import encode_version
from storage.records import Sibling
from storage.vclock import VectorClock

log = logging.getLogger(__name__)

BLOCK_WINDOW = 8
READ_AHEAD = 4
DIRECTORY_CLOCK = VectorClock({"dir": 1})
RPC_TIMEOUT = 10.0
DIRECTORY_CACHE_SECONDS = 30.0
BLOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class QuorumSettings:
    """N, R, W and the block size of the cluster (R and W may be overridden per request)."""

    n: int
    r: int
    w: int
    block_size: int


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
    ) -> None:
        self.what = what
        self.tally = QuorumTally(groups or [frozenset(calls)], required)
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
        """The tally once the quorum is met; Unavailable when it cannot be."""
        try:
            return await self.decided
        except QuorumError as e:
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
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.local = local
        self._connect = connect
        self.name = name
        self._now = clock
        self._known_directories = RecentSet(DIRECTORY_CACHE_SECONDS)
        self.read_repairs = 0

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

    def homes(self, placement: str) -> list[str]:
        """The first N peers of `placement`'s preference list, up or not."""
        return self.cluster.ring().preference(placement, self.settings.n)

    # -- records ---------------------------------------------------------------------------

    async def write_records(
        self, groups: list[tuple[str, list[tuple[str, Sibling]]]], w: int, what: str
    ) -> None:
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
        await QuorumCall(what, calls, w, counted).result()

    async def read_records(self, placement: str, keys: list[str], r: int) -> list[list[Sibling]]:
        """The reconciled siblings of each key from R replicas; stale replicas get repaired."""
        targets = self.targets(placement)
        calls = {t.node: self.call(t.node, "record.get", {"keys": keys}) for t in targets}
        quorum = QuorumCall(f"read {keys[0]}", calls, r)
        tally = await quorum.result()
        current = [reconcile(self._replies(tally, index)) for index in range(len(keys))]
        homes = {t.node for t in targets if t.hint_for is None}
        quorum.finished.addCallback(self._repair_records, keys, homes)
        return current

    @staticmethod
    def _replies(tally: QuorumTally, index: int) -> list[list[Sibling]]:
        return [siblings_from_wire(result["records"][index]) for result in tally.results.values()]

    def _repair_records(self, tally: QuorumTally, keys: list[str], homes: set[str]) -> None:
        """Read-repair: give every replica that replied the current siblings it lacks."""
        for index, key in enumerate(keys):
            replies = {
                node: siblings_from_wire(r["records"][index]) for node, r in tally.results.items()
            }
            current = reconcile(replies.values())
            for node, have in replies.items():
                missing = missing_siblings(have, current)
                if missing and node in homes:
                    self.read_repairs += 1
                    items = [[key, sibling_to_wire(s), None] for s in missing]
                    repair = defer.ensureDeferred(self.call(node, "record.put", {"items": items}))
                    repair.addErrback(
                        lambda f, n=node: log.info("read-repair of %s: %s", n, f.value)
                    )

    async def scan_prefix(self, placement: str, prefix: str, r: int) -> dict[str, list[Sibling]]:
        """Every key under `prefix` on `placement`'s replicas, reconciled across R replies."""
        calls = {
            t.node: self.call(t.node, "record.range", {"prefix": prefix})
            for t in self.targets(placement)
        }
        tally = await QuorumCall(f"list {prefix!r}", calls, r).result()
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
        await QuorumCall(f"block {block_hash[:12]}", calls, w).result()

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
        """The verified bytes of `block` from the first replica (then any peer) that has them."""
        tried: list[str] = []
        candidates = [t.node for t in self.targets(block.hash)]
        candidates += [n for n in self.cluster.ring().members if n not in candidates]
        for node in candidates:
            if not self.cluster.is_up(node):
                continue
            try:
                reply = await self.call(node, "block.get", {"hash": block.hash}, BLOCK_TIMEOUT)
            except (RpcError, WireError) as e:
                tried.append(f"{self.cluster.name_of(node)}: {e}")
                continue
            data = reply.get("data")
            if isinstance(data, bytes) and blake3.blake3(data).hexdigest() == block.hash:
                return data
            tried.append(f"{self.cluster.name_of(node)}: returned bytes that failed verification")
        raise Unavailable(f"block {block.hash} is on no reachable peer ({'; '.join(tried)})")

    async def _write_blocks(self, body: BinaryIO, w: int) -> tuple[list[Block], str, int]:
        """Split `body` into blocks and store each; returns the blocks, the file hash, the size."""
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
            chunk = body.read(self.settings.block_size)
            if not chunk:
                window.release()
                break
            size += len(chunk)
            file_hash.update(chunk)
            block_hash = blake3.blake3(chunk).hexdigest()
            blocks.append(Block(block_hash, len(chunk)))
            stored = defer.ensureDeferred(self.store_block(block_hash, chunk, w))
            stored.addErrback(lambda f: failures.append(f.value))
            stored.addBoth(lambda _: window.release())
            in_flight.append(stored)
        await defer.DeferredList(in_flight)
        if failures:
            raise failures[0]
        return blocks, file_hash.hexdigest(), size

    # -- files -----------------------------------------------------------------------------

    async def put_file(
        self,
        path: str,
        body: BinaryIO,
        *,
        mode: int = 0o644,
        context: VectorClock | None = None,
        w: int | None = None,
    ) -> dict[str, Any]:
        """Store `body` at `path`; returns {"path","size","blake3","version"}."""
        if path == ROOT:
            raise BadRequest("cannot write a file at the root directory")
        w = self._quorum(w, "w", self.settings.w)
        (current,) = await self.read_records(path, [manifest_key(path)], min(self.settings.r, w))
        head = body.read(INLINE_MAX + 1)
        if len(head) <= INLINE_MAX:
            inline: bytes | None = head
            blocks: list[Block] = []
            file_hash, size = blake3.blake3(head).hexdigest(), len(head)
        else:
            inline = None
            blocks, file_hash, size = await self._write_blocks(_Prepend(head, body), w)
        base = context if context is not None else context_of(current)
        clock = next_clock(base, current, self.cluster.self_id)
        now = self._now()
        manifest = Manifest(size, now, mode, file_hash, tuple(blocks), inline, writer=self.name)
        groups = [
            (path, [(manifest_key(path), Sibling(clock, manifest.encode()))]),
            (parent(path), [(entry_key(path), Sibling(clock, Entry(FILE, size, now).encode()))]),
        ]
        if not live(current):
            groups += self._missing_directories(path)
        await self.write_records(groups, w, f"write {path}")
        self._known_directories.update(ancestors(path), self._now())
        return {"path": path, "size": size, "blake3": file_hash, "version": encode_version(clock)}

    def _missing_directories(self, path: str) -> list[tuple[str, list[tuple[str, Sibling]]]]:
        """Entry writes for the ancestors of `path` this coordinator has not recently written."""
        now = self._now()
        return [
            (parent(d), [(entry_key(d), Sibling(DIRECTORY_CLOCK, Entry(DIRECTORY).encode()))])
            for d in ancestors(path)
            if not self._known_directories.fresh(d, now)
        ]

    async def resolve(self, path: str, version: str | None, r: int | None) -> FileVersion:
        """The manifest a read of `path` serves: NotFound, or ConflictingVersions on siblings
        unless `version` picks one."""
        r = self._quorum(r, "r", self.settings.r)
        (current,) = await self.read_records(path, [manifest_key(path)], r)
        values = live(current)
        if not values:
            raise NotFound(f"no file at {path}")
        context = encode_version(context_of(current))
        if version is not None:
            for sibling in values:
                if encode_version(sibling.clock) == version:
                    return FileVersion(self._manifest(path, sibling), version, context)
            raise NotFound(f"{path} has no version {version}")
        if len(values) > 1:
            raise ConflictingVersions(
                f"{path} has {len(values)} concurrent versions; read one with ?version= or "
                "write with X-Qfs-Version set to the context to resolve them",
                path=path,
                version=context,
                siblings=[self._sibling_summary(path, s) for s in values],
            )
        (only,) = values
        return FileVersion(self._manifest(path, only), encode_version(only.clock), context)

    def _manifest(self, path: str, sibling: Sibling) -> Manifest:
        try:
            return Manifest.decode(sibling.value or b"")
        except ValueError as e:
            raise Unavailable(f"stored manifest of {path} is unreadable: {e}") from None

    def _sibling_summary(self, path: str, sibling: Sibling) -> dict[str, Any]:
        manifest = self._manifest(path, sibling)
        return {
            "version": encode_version(sibling.clock),
            "size": manifest.size,
            "blake3": manifest.blake3,
            "mtime": manifest.mtime,
            "writer": manifest.writer,
        }

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

    async def delete_file(self, path: str, w: int | None = None) -> None:
        """Write tombstones (manifest and entry) that descend every version read."""
        w = self._quorum(w, "w", self.settings.w)
        (current,) = await self.read_records(path, [manifest_key(path)], min(self.settings.r, w))
        if not live(current):
            raise NotFound(f"no file at {path}")
        clock = next_clock(context_of(current), current, self.cluster.self_id)
        await self.write_records(
            [
                (path, [(manifest_key(path), Sibling(clock, None))]),
                (parent(path), [(entry_key(path), Sibling(clock, None))]),
            ],
            w,
            f"delete {path}",
        )

    async def list_directory(self, directory: str, r: int | None = None) -> list[dict[str, Any]]:
        """Entries of `directory`: name, type, size, mtime (and conflict when siblings exist)."""
        r = self._quorum(r, "r", self.settings.r)
        found = await self.scan_prefix(directory, entry_prefix(directory), r)
        entries = []
        for key, siblings in sorted(found.items()):
            values = live(siblings)
            if not values:
                continue
            decoded = [Entry.decode(s.value or b"") for s in values]
            newest = max(decoded, key=lambda e: e.mtime)
            entry: dict[str, Any] = {
                "name": entry_name(key),
                "type": newest.type,
                "size": newest.size,
                "mtime": newest.mtime,
            }
            if newest.type == FILE and len(decoded) > 1:
                entry["conflict"] = True
            entries.append(entry)
        if not entries and directory != ROOT:
            await self._require_directory(directory, r)
        return entries

    async def _require_directory(self, directory: str, r: int) -> None:
        (siblings,) = await self.read_records(parent(directory), [entry_key(directory)], r)
        kinds = {Entry.decode(s.value or b"").type for s in live(siblings)}
        if DIRECTORY not in kinds:
            raise NotFound(f"no directory at {directory}")

    async def stat(self, path: str, r: int | None = None) -> dict[str, Any]:
        """Metadata of the file at `path` and, per block, the peers holding a copy."""
        resolved = await self.resolve(path, None, r)
        manifest = resolved.manifest
        hashes = sorted({b.hash for b in manifest.blocks})
        holders = await self._holders(hashes) if hashes else {}
        return {
            "path": path,
            "size": manifest.size,
            "blake3": manifest.blake3,
            "mtime": manifest.mtime,
            "mode": f"{manifest.mode:04o}",
            "owner": manifest.owner,
            "group": manifest.group,
            "version": resolved.version,
            "inline": manifest.inline is not None,
            "replicas": [self.cluster.name_of(n) for n in self.homes(path)],
            "blocks": [
                {"hash": b.hash, "size": b.size, "holders": holders.get(b.hash, [])}
                for b in manifest.blocks
            ],
        }

    async def _holders(self, hashes: list[str]) -> dict[str, list[str]]:
        """Block hash -> names of up peers that hold it."""
        peers = [n for n in sorted(self.cluster.ring().members) if self.cluster.is_up(n)]
        calls = {n: self.call(n, "block.has", {"hashes": hashes}) for n in peers}
        tally = await QuorumCall("stat", calls, 0).finished
        holders: dict[str, list[str]] = {}
        for node, reply in sorted(tally.results.items()):
            for block_hash, have in zip(hashes, reply["have"], strict=False):
                if have:
                    holders.setdefault(block_hash, []).append(self.cluster.name_of(node))
        return holders

    def _quorum(self, given: int | None, name: str, default: int) -> int:
        if given is None:
            return default
        if not 1 <= given <= self.settings.n:
            raise BadRequest(f"{name}={given} must be between 1 and N={self.settings.n}")
        return given


class RecentSet:
    """Keys seen within the last `ttl` seconds, at most `limit` of them (oldest dropped first).

    The coordinator remembers the directories whose entries it wrote, so a burst of new files
    in one directory does not rewrite the same ancestor entries each time. Directory entries
    are only ever created, so a remembered one cannot have gone; the TTL bounds how long a
    directory another peer removes could be believed present.
    """

    def __init__(self, ttl: float, limit: int = 10_000) -> None:
        self._ttl = ttl
        self._limit = limit
        self._seen: dict[str, float] = {}

    def fresh(self, key: str, now: float) -> bool:
        """Whether `key` was added within the TTL."""
        seen = self._seen.get(key)
        return seen is not None and now - seen < self._ttl

    def update(self, keys: Iterable[str], now: float) -> None:
        """Add (or refresh) `keys` as seen at `now`."""
        for key in keys:
            self._seen.pop(key, None)
            self._seen[key] = now
        while len(self._seen) > self._limit:
            del self._seen[next(iter(self._seen))]


class _Prepend:
    """A readable body with `head` (already read) put back in front of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int) -> bytes:
        if not self._head:
            return self._rest.read(size)
        chunk = self._head[:size]
        self._head = self._head[size:]
        if len(chunk) < size:
            chunk += self._rest.read(size - len(chunk))
        return chunk
