"""The record store: each key holds a set of siblings (vector clock + value or tombstone).

Merge rule of ``put`` (the same on every replica, so replicas converge whatever the order):
if a stored sibling descends the new one (equal included) nothing changes; otherwise the
stored siblings the new one descends are dropped, concurrent ones stay, and the new one joins.

SQLite in WAL mode with ``synchronous=FULL``: a write is durable when the call returns.
Writers that overlap share one transaction and one fsync (group commit): a caller queues its
items, and whichever caller holds the database lock commits everything queued so far, each
caller's items under its own savepoint so one caller's bad record cannot fail another's.
A database error (a full disk above all: SQLite may then roll back the whole transaction)
fails the whole batch; a full disk is ``storage.fsutil.StorageFull``, and the store takes
writes again once space is freed.
Thread-safe: one writer connection guarded by a lock, and one reader connection with its own
lock, so reads see the last committed state without waiting behind a commit's fsync.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cbor2

from storage.fsutil import StorageFull, sync_dir
from storage.vclock import VectorClock

PRIVATE_FILE = 0o600  # records are every file's metadata and small files' contents

_PAGE = 256  # rows fetched per query when iterating, so the lock is never held across yields
MAX_TRACKED_CHANGES = 100_000  # keys `take_changes` remembers; past that it says "everything"


@dataclass(frozen=True)
class Sibling:
    """One version of a key: its clock and its bytes, or None for a deletion (tombstone)."""

    clock: VectorClock
    value: bytes | None

    def __post_init__(self) -> None:
        if not isinstance(self.clock, VectorClock):
            raise TypeError(f"Sibling.clock must be a VectorClock, got {self.clock!r:.80}")
        if self.value is not None and not isinstance(self.value, bytes):
            raise TypeError(f"Sibling.value must be bytes or None, got {type(self.value)}")

    @property
    def tombstone(self) -> bool:
        """True when this sibling records a deletion."""
        return self.value is None


class RecordCorrupt(ValueError):
    """A stored row cannot be decoded; ``key`` names the record."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"record {key!r} is corrupt: {reason}")
        self.key = key


@dataclass
class _Request:
    """One caller's queued writes and, once committed, their outcome."""

    items: list[tuple[str, Sibling]]
    done: bool = False
    results: list[list[Sibling]] = field(default_factory=list)
    error: BaseException | None = None


class RecordStore:
    """Keys -> siblings in one SQLite file (see the module docstring for the guarantees)."""

    def __init__(self, path: str | Path) -> None:
        """Open or create the store; ValueError if the file is not a usable database."""
        self.path = Path(path)
        created = not self.path.exists()
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files that mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
        self._lock = threading.Lock()  # owns the connection
        self._queue_lock = threading.Lock()  # owns _queue
        self._queue: list[_Request] = []
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: cannot open record store: {exc}") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise ValueError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records"
                " (key TEXT PRIMARY KEY, siblings BLOB NOT NULL) WITHOUT ROWID"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{self.path}: not a usable record store: {exc}") from exc
        except BaseException:
            self._db.close()
            raise
        if created:
            sync_dir(self.path.parent)  # the new database file's directory entry
        self._read_lock = threading.Lock()  # owns the reader connection
        self._reader: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._changes_lock = threading.Lock()  # owns _changed and _too_many_changes
        self._changed: set[str] = set()
        self._too_many_changes = True  # nothing is known about what was there before

    def take_changes(self) -> set[str] | None:
        """The keys written or deleted since the last call, or None when that is not known
        (the first call, or more than MAX_TRACKED_CHANGES keys): read them all then. A key
        is noted once its change is committed, so a reader told of it sees the change. For
        one consumer (anti-entropy's digest cache): a call takes what it returns."""
        with self._changes_lock:
            changed, unknown = self._changed, self._too_many_changes
            self._changed, self._too_many_changes = set(), False
        return None if unknown else changed

    def _note_changed(self, keys: Iterable[str]) -> None:
        with self._changes_lock:
            if self._too_many_changes:
                return
            self._changed.update(keys)
            if len(self._changed) > MAX_TRACKED_CHANGES:
                self._changed, self._too_many_changes = set(), True

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"record store {self.path} is closed")
        return self._db

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise ValueError(f"record store {self.path} is closed")
        return self._reader

    def get(self, key: str) -> list[Sibling]:
        """The key's siblings (empty if absent)."""
        _check_key(key)
        with self._read_lock:
            return self._load(self._read_conn(), key)

    def get_many(self, keys: Iterable[str]) -> dict[str, list[Sibling]]:
        """The siblings of each of `keys` that is present, read _PAGE keys per query."""
        wanted = sorted(set(keys))
        for key in wanted:
            _check_key(key)
        found: dict[str, list[Sibling]] = {}
        for start in range(0, len(wanted), _PAGE):
            page = wanted[start : start + _PAGE]
            marks = ",".join("?" * len(page))
            with self._read_lock:
                rows = (
                    self._read_conn()
                    .execute(f"SELECT key, siblings FROM records WHERE key IN ({marks})", page)
                    .fetchall()
                )
            found.update((key, _decode(key, blob)) for key, blob in rows)
        return found

    def put(self, key: str, sibling: Sibling) -> list[Sibling]:
        """Apply the merge rule durably; returns the key's siblings afterwards."""
        return self.put_many([(key, sibling)])[0]

    def put_many(self, items: Iterable[tuple[str, Sibling]]) -> list[list[Sibling]]:
        """Apply several puts atomically in one transaction; one result per item, in order."""
        request = _Request(list(items))
        _check_items(request.items)
        if not request.items:
            return []
        with self._queue_lock:
            self._queue.append(request)
        with self._lock:
            if not request.done:  # nobody committed it while we waited: lead a group commit
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if request.error is not None:
            raise request.error
        return request.results

    def put_groups(
        self, groups: list[list[tuple[str, Sibling]]]
    ) -> list[list[list[Sibling]] | Exception]:
        """Several callers' ``put_many`` in one transaction and one fsync. Each group is applied
        atomically or not at all; the outcome of each is its results or the error that
        failed it (the other groups are unaffected)."""
        requests = [_Request(list(items)) for items in groups]
        valid = []
        for request in requests:
            try:
                _check_items(request.items)
            except (TypeError, ValueError) as exc:
                request.error = exc
            else:
                valid.append(request)
        if valid:
            with self._lock:
                self._commit(valid)
        # _commit re-raises anything that is not an Exception, so every error left is one.
        return [
            request.results if request.error is None else cast(Exception, request.error)
            for request in requests
        ]

    def _commit(self, batch: list[_Request]) -> None:
        """Apply queued requests in one transaction (caller holds the lock)."""
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for request in batch:
                    db.execute("SAVEPOINT request")
                    try:
                        request.results = [self._apply(db, k, s) for k, s in request.items]
                    except sqlite3.Error:
                        raise  # the database's trouble, not this request's: fail the batch
                    except Exception as exc:
                        db.execute("ROLLBACK TO request")
                        request.error = exc
                    db.execute("RELEASE request")
                db.execute("COMMIT")
                self._note_changed(
                    key for request in batch if request.error is None for key, _ in request.items
                )
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:
            error = self._storage_error(exc)
            for request in batch:
                request.error = request.error or error
            if not isinstance(exc, Exception):
                raise
        finally:
            for request in batch:
                request.done = True

    def _storage_error(self, exc: BaseException) -> BaseException:
        """StorageFull for SQLite's "database or disk is full", else `exc` itself."""
        if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
            return StorageFull(f"no space for records in {self.path}: {exc}")
        return exc

    def _apply(self, db: sqlite3.Connection, key: str, new: Sibling) -> list[Sibling]:
        siblings = self._load(db, key)
        if any(old.clock.descends(new.clock) for old in siblings):
            return siblings
        siblings = [old for old in siblings if not new.clock.descends(old.clock)]
        siblings.append(new)
        db.execute(
            "INSERT OR REPLACE INTO records (key, siblings) VALUES (?, ?)",
            (key, _encode(siblings)),
        )
        return siblings

    def _load(self, db: sqlite3.Connection, key: str) -> list[Sibling]:
        row = db.execute("SELECT siblings FROM records WHERE key = ?", (key,)).fetchone()
        return [] if row is None else _decode(key, row[0])

    def delete(self, key: str) -> bool:
        """Purge a key and all its siblings durably (tombstone GC); False if it was absent."""
        _check_key(key)
        with self._lock:
            cursor = self._conn().execute("DELETE FROM records WHERE key = ?", (key,))
            if cursor.rowcount > 0:
                self._note_changed([key])
            return cursor.rowcount > 0

    def delete_if(self, key: str, still: Callable[[list[Sibling]], bool]) -> bool:
        """Purge `key` durably only if `still(its current siblings)` holds, checked and deleted
        atomically: a write that lands after a remote check is never erased by the delete the
        check decided on. False if it was absent or `still` said no."""
        _check_key(key)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                current = self._load(db, key)
                deleted = bool(current) and still(current)
                if deleted:
                    db.execute("DELETE FROM records WHERE key = ?", (key,))
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if deleted:
                self._note_changed([key])
            return deleted

    def range(self, start: str = "", end: str | None = None) -> Iterator[tuple[str, list[Sibling]]]:
        """Keys in [start, end) ascending with their siblings, read a page at a time.

        Keys written during the iteration may or may not appear; each yielded entry is
        consistent. A corrupt row raises RecordCorrupt when reached.
        """
        _check_key(start)
        if end is not None:
            _check_key(end)
        low, inclusive = start, True
        while True:
            op = ">=" if inclusive else ">"
            sql = f"SELECT key, siblings FROM records WHERE key {op} ?"
            params: list[str | int] = [low]
            if end is not None:
                sql += " AND key < ?"
                params.append(end)
            sql += " ORDER BY key LIMIT ?"
            params.append(_PAGE)
            with self._read_lock:
                rows = self._read_conn().execute(sql, params).fetchall()
            for key, blob in rows:
                yield key, _decode(key, blob)
            if len(rows) < _PAGE:
                return
            low, inclusive = rows[-1][0], False

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``, ascending."""
        _check_key(prefix)
        low, inclusive = prefix, True
        while True:
            op = ">=" if inclusive else ">"
            with self._read_lock:
                rows = (
                    self._read_conn()
                    .execute(
                        f"SELECT key FROM records WHERE key {op} ? ORDER BY key LIMIT ?",
                        (low, _PAGE),
                    )
                    .fetchall()
                )
            for (key,) in rows:
                if not key.startswith(prefix):
                    return
                yield key
            if len(rows) < _PAGE:
                return
            low, inclusive = rows[-1][0], False

    def count(self, prefix: str = "") -> int:
        """Number of keys stored that start with ``prefix`` (all keys by default)."""
        _check_key(prefix)
        sql, params = "SELECT count(*) FROM records", []
        if prefix:
            # Keys with the prefix sort in [prefix, prefix with its last character bumped).
            sql += " WHERE key >= ? AND key < ?"
            params = [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        with self._read_lock:
            return self._read_conn().execute(sql, params).fetchone()[0]

    def close(self) -> None:
        """Close the database; later calls raise ValueError. Idempotent."""
        with self._lock, self._read_lock:
            for connection in (self._db, self._reader):
                if connection is not None:
                    connection.close()
            self._db = self._reader = None


def _check_items(items: list[tuple[str, Sibling]]) -> None:
    for key, sibling in items:
        _check_key(key)
        if not isinstance(sibling, Sibling):
            raise TypeError(f"expected a Sibling for {key!r}, got {type(sibling).__name__}")


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"record key must be a str, got {type(key).__name__}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"record key is not valid text: {key!r:.80}") from exc


def _encode(siblings: list[Sibling]) -> bytes:
    """CBOR: a list of [clock map, value bytes or null]."""
    return cbor2.dumps([[s.clock.to_cbor(), s.value] for s in siblings], canonical=True)


def _decode(key: str, blob: object) -> list[Sibling]:
    if not isinstance(blob, bytes):
        raise RecordCorrupt(key, f"stored value is {type(blob).__name__}, not a blob")
    try:
        items = cbor2.loads(blob)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise RecordCorrupt(key, f"undecodable CBOR ({exc})") from exc
    if not isinstance(items, list) or not items:
        raise RecordCorrupt(key, "expected a non-empty list of siblings")
    siblings = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2):
            raise RecordCorrupt(key, f"sibling is not a [clock, value] pair: {item!r:.80}")
        raw_clock, value = item
        if value is not None and not isinstance(value, bytes):
            raise RecordCorrupt(key, f"sibling value is {type(value).__name__}, not bytes")
        try:
            clock = VectorClock.from_cbor(raw_clock)
        except ValueError as exc:
            raise RecordCorrupt(key, str(exc)) from exc
        siblings.append(Sibling(clock, value))
    return siblings
