"""This peer's store as the rest of the cluster sees it: the RPC methods a replica serves.

Blocking storage calls run in a thread pool so the reactor keeps moving bytes. Local storage
faults answer with their own codes: "storage_full" (the disk is full: nothing was stored),
"unreadable" (a read error: the copy is treated as corrupt, so ask another replica). Record writes
from concurrent requests share commits: the record store batches the puts waiting on its lock
into one transaction (group commit), and none is acknowledged before its batch is durable.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from gossip.wire import Message, WireError
from peer.pins import BlockActivity
from peer.rpc import Handler, RpcError
from storage.blocks import BlockCorrupt, BlockNotFound, BlockStore, BlockUnreadable, HashMismatch
from storage.fsutil import StorageFull
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock

log = logging.getLogger(__name__)

RunInThread = Callable[..., "defer.Deferred[Any]"]
PutRecords = Callable[[list[tuple[str, Sibling]]], Awaitable[Any]]
HINT_PREFIX = "h:"
LOCAL_PREFIX = "l:"  # this peer's own bookkeeping: stays here, never replicated
BLOCK_HINT = "b:"
HINT_CLOCK = VectorClock({"hint": 1})
MAX_BATCH_KEYS = 10_000
MAX_INLINE_READS = 8
STORAGE_FULL = "storage_full"
UNREADABLE = "unreadable"
MAX_BLOCK_AGE = 100 * 365 * 86400  # seconds; a block copy's age on the wire
MAX_SIBLINGS = 1024  # per key; concurrent writes leave a handful


def sibling_to_wire(sibling: Sibling) -> list[Any]:
    """[clock map, value bytes or None]"""
    return [sibling.clock.to_cbor(), sibling.value]


def sibling_from_wire(raw: Any) -> Sibling:
    """Parse a sibling received from a peer; WireError says what is malformed."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise WireError("sibling must be [clock, value]")
    clock, value = raw
    if value is not None and not isinstance(value, bytes):
        raise WireError("sibling value must be bytes or null")
    try:
        return Sibling(VectorClock.from_cbor(clock), value)
    except ValueError as e:
        raise WireError(f"bad vector clock: {e}") from None


def siblings_from_wire(raw: Any) -> list[Sibling]:
    """Parse a list of siblings received from a peer (already through the bounded decoder:
    no tags, bounded depth and size); WireError names what is malformed, never quoting it."""
    if not isinstance(raw, list) or len(raw) > MAX_SIBLINGS:
        raise WireError(f"siblings must be a list of at most {MAX_SIBLINGS}")
    return [sibling_from_wire(item) for item in raw]


def hint_key(target: str, key: str) -> str:
    """The hint record saying `key` (a record key, or BLOCK_HINT + hash) belongs to `target`."""
    return f"{HINT_PREFIX}{target}:{key}"


def parse_hint_key(hint: str) -> tuple[str, str]:
    """(target node, hinted key) of a hint record key."""
    target, _, key = hint[len(HINT_PREFIX) :].partition(":")
    return target, key


@dataclass
class ReplicaState:
    """Whether this peer's store may answer for its share yet.

    `verified`: its data was checked against the cluster's purge rounds (peer.repair.horizon),
    or it is empty; until then data calls are refused, so data older than a purge it missed is
    never served. `ready`: it holds its whole share; a joining or rebuilt peer pulls its share
    from the others first, and reads do not count its answers until it has.
    """

    verified: bool = True
    ready: bool = True


class NotVerified(RpcError):
    """A data call reached a peer whose store has not been checked against the cluster yet."""

    def __init__(self) -> None:
        super().__init__("starting", "this peer's data is being checked against the cluster")


class Replica:
    """RPC handlers over one peer's block store and record store."""

    def __init__(
        self,
        blocks: BlockStore,
        records: RecordStore,
        run_in_thread: RunInThread,
        put_records: PutRecords | None = None,
    ) -> None:
        """`put_records` commits record writes off the reactor (a `RecordWriter` in a peer);
        by default they go to `run_in_thread`."""
        self.blocks = blocks
        self.records = records
        self._run = run_in_thread
        self._put_records = put_records or (lambda items: run_in_thread(records.put_many, items))
        self.state = ReplicaState()
        self.activity = BlockActivity()

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for the RPC server; data calls wait for verification."""
        methods: dict[str, Handler] = {
            "block.has": self.block_has,
            "block.put": self.block_put,
            "block.get": self.block_get,
            "record.get": self.record_get,
            "record.put": self.record_put,
            "record.range": self.record_range,
        }
        return {name: self.verified_only(handler) for name, handler in methods.items()}

    def verified_only(self, handler: Handler) -> Handler:
        """`handler`, refused (NotVerified) until this peer's data was verified."""

        async def checked(message: Message) -> dict[str, Any]:
            if not self.state.verified:
                raise NotVerified()
            return await handler(message)

        return checked

    async def store_block(
        self, data: bytes, block: str, *, repair: bool = False, age: float = 0.0
    ) -> None:
        """Store a block here durably. A write's block is noted first for garbage collection
        (peer.pins) and is new; a repair's copy is not noted and is as old as the copy it was
        made from (`age`, seconds since that one was last used): moving a block around
        references nothing, and copies that looked new would pass an unreferenced block from
        peer to peer for ever, each copy younger than the grace when the sweep comes."""
        if not repair:
            self.activity.note([block])
            age = 0.0
        await self._run(lambda: self.blocks.put(data, block, age=age))

    async def copy_of(self, block: str) -> tuple[bytes, float]:
        """A verified copy of a stored block to send to a peer, with its age (for
        `store_block` there); BlockError if it cannot be read."""

        def read() -> tuple[bytes, float]:
            data = self.blocks.get(block)
            return data, self.blocks.age(block) or 0.0

        return await self._run(read)

    async def block_has(self, message: Message) -> dict[str, Any]:
        hashes = _string_list(message, "hashes")
        if message.field("repair", bool, default=False):  # a check, not a writer's dedup
            return {"have": await self._run(lambda: [self._present(h) for h in hashes])}
        self.activity.note(hashes)  # a writer asking may reference them instead of sending
        have = await self._run(lambda: [self._has(h) for h in hashes])
        return {"have": have}

    def _has(self, block: str) -> bool:
        """Whether the block is here; a present block is touched, because a writer asking may
        be about to reference it instead of sending it (garbage collection spares it)."""
        try:
            return self.blocks.touch(block)
        except ValueError:
            return False

    def _present(self, block: str) -> bool:
        try:
            return self.blocks.has(block)
        except ValueError:
            return False

    async def block_put(self, message: Message) -> dict[str, Any]:
        block = message.field("hash", str)
        data = message.field("data", bytes)
        hint_for = message.field("hint_for", str, default=None)
        repair = message.field("repair", bool, default=False)
        age = block_age(message.body.get("age", 0.0))
        try:
            await self.store_block(data, block, repair=repair, age=age)
        except HashMismatch as e:
            raise RpcError("hash_mismatch", str(e)) from None
        except ValueError as e:
            raise RpcError("bad_request", str(e)) from None
        except StorageFull as e:
            raise RpcError(STORAGE_FULL, str(e)) from None
        if hint_for is not None:
            await self._store_records([(hint_key(hint_for, BLOCK_HINT + block), _hint())])
        return {}

    async def block_get(self, message: Message) -> dict[str, Any]:
        block = message.field("hash", str)
        try:
            data, age = await self.copy_of(block)
        except BlockNotFound:
            raise RpcError("not_found", f"no block {block}") from None
        except BlockCorrupt:
            raise RpcError("corrupt", f"block {block} failed verification; quarantined") from None
        except BlockUnreadable as e:
            raise RpcError(UNREADABLE, str(e)) from None
        except ValueError as e:
            raise RpcError("bad_request", str(e)) from None
        return {"data": data, "age": age}

    async def record_get(self, message: Message) -> dict[str, Any]:
        """Siblings of a few keys. Read on the calling thread: a point read on the store's own
        reader connection takes microseconds and never waits for a commit, so a thread hop
        would cost more than the read."""
        keys = _string_list(message, "keys")
        if len(keys) > MAX_INLINE_READS:
            found = await self._run(lambda: [self.records.get(key) for key in keys])
        else:
            found = [self.records.get(key) for key in keys]
        return {
            "records": [[sibling_to_wire(s) for s in siblings] for siblings in found],
            "ready": self.state.ready,
        }

    async def record_put(self, message: Message) -> dict[str, Any]:
        """Store [key, sibling, hint_for] items durably; a hinted item also records its hint."""
        raw_items = message.field("items", list)
        if len(raw_items) > MAX_BATCH_KEYS:
            raise RpcError("bad_request", f"more than {MAX_BATCH_KEYS} items")
        items: list[tuple[str, Sibling]] = []
        for raw in raw_items:
            if (
                not isinstance(raw, list)
                or len(raw) != 3
                or not isinstance(raw[0], str)
                or not isinstance(raw[2], str | None)
            ):
                raise WireError("record.put: each item must be [key, sibling, hint_for or null]")
            key, sibling, hint_for = raw[0], sibling_from_wire(raw[1]), raw[2]
            items.append((key, sibling))
            if hint_for is not None:
                items.append((hint_key(hint_for, key), _hint()))
        await self._store_records(items)
        return {}

    async def _store_records(self, items: list[tuple[str, Sibling]]) -> None:
        try:
            await self._put_records(items)
        except StorageFull as e:
            raise RpcError(STORAGE_FULL, str(e)) from None

    async def record_range(self, message: Message) -> dict[str, Any]:
        """Keys under `prefix` in key order: with `after`, only keys after prefix + after;
        with `limit`, at most that many (a page of a listing)."""
        prefix = message.field("prefix", str)
        if not prefix:
            raise RpcError("bad_request", "record.range needs a non-empty prefix")
        after = message.field("after", (str, type(None)), default=None)
        limit = message.field("limit", (int, type(None)), default=None)
        if limit is not None and not 1 <= limit <= MAX_BATCH_KEYS:
            raise RpcError("bad_request", f"record.range limit must be 1-{MAX_BATCH_KEYS}")
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        start = prefix if after is None else prefix + after + "\0"

        def scan() -> list[list[Any]]:
            return [
                [key, [sibling_to_wire(s) for s in siblings]]
                for key, siblings in itertools.islice(self.records.range(start, end), limit)
            ]

        return {"items": await self._run(scan), "ready": self.state.ready}


def _hint() -> Sibling:
    return Sibling(HINT_CLOCK, b"")


def block_age(value: object) -> float:
    """A block copy's age from the wire: seconds, finite, from 0 up to MAX_BLOCK_AGE."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"block age must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value <= MAX_BLOCK_AGE:  # NaN fails both comparisons
        raise WireError(f"block age must be from 0 to {MAX_BLOCK_AGE} seconds")
    return float(value)


def _string_list(message: Message, name: str) -> list[str]:
    values = message.field(name, list)
    if len(values) > MAX_BATCH_KEYS or not all(isinstance(v, str) for v in values):
        raise WireError(
            f"{message.type}: {name} must be a list of at most {MAX_BATCH_KEYS} strings"
        )
    return values
