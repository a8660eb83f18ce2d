"""Content-addressed block stores: a block's name is the BLAKE3 hash of its bytes.

Contract (run against every implementation by tests/unit/test_blocks.py):
- ``put`` is idempotent: storing an existing block succeeds without rewriting it.
- every ``get`` re-hashes; a mismatch moves the bad copy to quarantine and raises BlockCorrupt,
  after which the block is absent (so a replica can fetch a good copy and ``put`` it again).
- a local read error (EIO and the like) raises BlockUnreadable and moves the copy out of the
  way when it can, as corruption does: the block is served from another replica and stored
  again; a full disk fails a ``put`` with ``storage.fsutil.StorageFull``, storing nothing.
- a hash string is exactly 64 lowercase hex digits, anything else is a ValueError: a name can
  never walk out of the store's directory.

``DiskBlockStore`` keeps ``root/ab/<64 hex>`` (git-style fan-out by the first byte). A put
writes ``root/incoming/<temp>``, fsyncs it, renames it into place and fsyncs the fan-out
directory, so a crash leaves either no block or the whole block under its final name; temp
files left by a crash are wiped when the store opens. The directories are 0700 (tightened
when the store opens) and block files 0400. One process owns a root at a time
(``storage.datadir.DataDir`` holds the lock). All methods are thread-safe. With fsync on,
block contents are written, and blocks of 64 KiB or more read, with direct I/O where the file
system allows it.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import io
import logging
import mmap
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from storage.fsutil import NO_SPACE, StorageFull, sync_dir

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FANOUT = [f"{i:02x}" for i in range(256)]
PRIVATE_DIR = 0o700  # blocks are file contents: no other local user reads them
BLOCK_FILE = 0o400  # read-only, as content addressing never rewrites a block
DIRECT_ALIGN = 4096  # offsets, lengths and buffer addresses of direct I/O
DIRECT_READ_MIN = 64 * 1024  # smaller blocks are read through the page cache
_staging = threading.local()
# Read errors that say the stored copy itself is bad: an I/O error of the medium, a damaged
# file system, something other than a file where the block should be.
_BAD_COPY = frozenset({errno.EIO, errno.EISDIR, errno.EBADMSG, errno.EUCLEAN, errno.ENXIO})
log = logging.getLogger(__name__)


def _staging_buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer of at least `size` bytes, for direct I/O."""
    buffer = getattr(_staging, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _staging.buffer = mmap.mmap(-1, size)
    return buffer


def _set_direct(fd: int, on: bool) -> None:
    """Switch direct I/O on or off for an open file (EINVAL where the file system has none)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


class BlockError(Exception):
    """Base class for block store failures."""


class BlockNotFound(BlockError):
    """No block with this hash is stored."""

    def __init__(self, hash: str) -> None:
        super().__init__(f"block {hash} not found")
        self.hash = hash


class HashMismatch(BlockError):
    """The data handed to ``put`` does not hash to the expected value."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"block hash mismatch: expected {expected}, data hashes to {actual}")
        self.expected = expected
        self.actual = actual


class BlockCorrupt(BlockError):
    """A stored block no longer matches its hash; the bad copy was quarantined."""

    def __init__(self, hash: str, quarantined_path: Path | None) -> None:
        where = f"moved to {quarantined_path}" if quarantined_path else "quarantined"
        super().__init__(f"block {hash} is corrupt ({where})")
        self.hash = hash
        # None when the copy lives in memory or another caller quarantined it first.
        self.quarantined_path = quarantined_path


class BlockUnreadable(BlockError):
    """The local copy could not be read (an I/O error); treat it like corruption: it was moved
    to quarantine when the file system still allowed that, so a good copy can be stored."""

    def __init__(self, hash: str, error: OSError, quarantined_path: Path | None = None) -> None:
        where = f"moved to {quarantined_path}" if quarantined_path else "left in place"
        super().__init__(f"block {hash} is unreadable: {error} ({where})")
        self.hash = hash
        self.error = error
        self.quarantined_path = quarantined_path


def block_hash(data: bytes) -> str:
    """The block's name: BLAKE3 of its bytes as 64 lowercase hex digits."""
    return blake3.blake3(data).hexdigest()


def check_hash(hash: object) -> str:
    """Return ``hash`` if it is 64 lowercase hex digits, else raise ValueError."""
    if not isinstance(hash, str) or not _HASH_RE.fullmatch(hash):
        raise ValueError(f"malformed block hash (want 64 lowercase hex digits): {hash!r:.80}")
    return hash


@dataclass(frozen=True)
class BlockStats:
    """What a store holds: live blocks, their total size, and distinct quarantined hashes."""

    count: int
    bytes: int
    quarantined: int


class BlockStore(abc.ABC):
    """The block store contract shared by the disk and memory implementations."""

    clock: Callable[[], float] = staticmethod(time.time)  # the wall clock puts are dated by

    @abc.abstractmethod
    def put(self, data: bytes, expected_hash: str | None = None, *, age: float = 0.0) -> str:
        """Store ``data`` durably and return its hash; HashMismatch if not ``expected_hash``.

        ``age``: a copy of a block stored elsewhere is as old as that one (seconds since it was
        last used there): garbage collection ages the copy from then, not from now, so copies
        that repair moves between peers never keep an unreferenced block alive. A block already
        stored keeps its own time."""

    @abc.abstractmethod
    def get(self, hash: str) -> bytes:
        """The verified bytes; BlockNotFound if absent, BlockCorrupt (and quarantine) if bad,
        BlockUnreadable if the copy cannot be read."""

    @abc.abstractmethod
    def has(self, hash: str) -> bool:
        """Whether a block is stored (not verified: use ``get`` for that)."""

    @abc.abstractmethod
    def size(self, hash: str) -> int | None:
        """The stored block's size in bytes, or None if absent."""

    @abc.abstractmethod
    def delete(self, hash: str) -> bool:
        """Remove a block; False if it was not there."""

    @abc.abstractmethod
    def touch(self, hash: str) -> bool:
        """Mark a stored block as just used (garbage collection spares recently used blocks);
        False if it is not stored."""

    @abc.abstractmethod
    def last_used(self, hash: str) -> float | None:
        """Wall-clock time of the block's last put or touch, or None if it is not stored."""

    def age(self, hash: str) -> float | None:
        """Seconds since the block's last put or touch (never negative), or None if absent."""
        used = self.last_used(hash)
        return None if used is None else max(0.0, self.clock() - used)

    @abc.abstractmethod
    def hashes(self) -> Iterator[str]:
        """Every stored block's hash, in no particular order (for anti-entropy)."""

    @abc.abstractmethod
    def stats(self) -> BlockStats:
        """Counts and sizes, without reading block contents."""

    @abc.abstractmethod
    def quarantined(self) -> list[str]:
        """Sorted distinct hashes whose stored copies were found corrupt."""


class MemoryBlockStore(BlockStore):
    """The block store contract in memory, for tests of the packages above storage; `clock`
    dates puts and touches (a test's simulated wall clock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._blocks: dict[str, bytes] = {}
        self._quarantine: dict[str, bytes] = {}
        self._used: dict[str, float] = {}

    def put(self, data: bytes, expected_hash: str | None = None, *, age: float = 0.0) -> str:
        """See BlockStore.put."""
        hash = _hash_checked(data, expected_hash)
        with self._lock:
            if hash not in self._blocks:
                self._blocks[hash] = bytes(data)
                self._used[hash] = self.clock() - age
        return hash

    def touch(self, hash: str) -> bool:
        """See BlockStore.touch."""
        check_hash(hash)
        with self._lock:
            if hash not in self._blocks:
                return False
            self._used[hash] = self.clock()
            return True

    def last_used(self, hash: str) -> float | None:
        """See BlockStore.last_used."""
        check_hash(hash)
        with self._lock:
            return self._used.get(hash) if hash in self._blocks else None

    def get(self, hash: str) -> bytes:
        """See BlockStore.get."""
        check_hash(hash)
        with self._lock:
            data = self._blocks.get(hash)
            if data is None:
                raise BlockNotFound(hash)
            if block_hash(data) != hash:
                self._quarantine[hash] = self._blocks.pop(hash)
                raise BlockCorrupt(hash, None)
        return data

    def has(self, hash: str) -> bool:
        """See BlockStore.has."""
        check_hash(hash)
        with self._lock:
            return hash in self._blocks

    def size(self, hash: str) -> int | None:
        """See BlockStore.size."""
        check_hash(hash)
        with self._lock:
            data = self._blocks.get(hash)
        return None if data is None else len(data)

    def delete(self, hash: str) -> bool:
        """See BlockStore.delete."""
        check_hash(hash)
        with self._lock:
            return self._blocks.pop(hash, None) is not None

    def hashes(self) -> Iterator[str]:
        """See BlockStore.hashes."""
        with self._lock:
            snapshot = list(self._blocks)
        return iter(snapshot)

    def stats(self) -> BlockStats:
        """See BlockStore.stats."""
        with self._lock:
            size = sum(len(data) for data in self._blocks.values())
            return BlockStats(len(self._blocks), size, len(self._quarantine))

    def quarantined(self) -> list[str]:
        """See BlockStore.quarantined."""
        with self._lock:
            return sorted(self._quarantine)

    def corrupt(self, hash: str) -> None:
        """Flip one bit of a stored block, to test corruption handling and read-repair."""
        check_hash(hash)
        with self._lock:
            data = self._blocks.get(hash)
            if data is None:
                raise BlockNotFound(hash)
            flipped = bytearray(data or b"\0")  # an empty block becomes one wrong byte
            flipped[len(flipped) // 2] ^= 0x01
            self._blocks[hash] = bytes(flipped)


class DiskBlockStore(BlockStore):
    """Blocks as files under ``root`` (layout and crash behaviour in the module docstring)."""

    def __init__(self, root: str | Path, fsync: bool = True, keep_free: int = 0) -> None:
        """Create the layout if needed and wipe ``incoming/``; ``fsync=False`` is for tests.
        A block that would leave less than ``keep_free`` bytes free is refused (StorageFull):
        that space is the data directory's reserve for records (storage.fsutil.SpaceReserve)."""
        self.root = Path(root)
        self._fsync = fsync
        self._keep_free = keep_free
        self._direct = fsync  # direct I/O only pays when every block is flushed
        self._incoming = self.root / "incoming"
        self._quarantine = self.root / "quarantine"
        # Guards the check-then-rename of put, delete, quarantine and the counters below.
        self._lock = threading.Lock()
        self._count: int | None = None  # counted lazily on the first stats() call
        self._bytes = 0
        created_root = not self.root.is_dir()
        self.root.mkdir(PRIVATE_DIR, parents=True, exist_ok=True)
        for name in ("", *_FANOUT, "incoming", "quarantine"):
            directory = self.root / name
            directory.mkdir(PRIVATE_DIR, exist_ok=True)
            os.chmod(directory, PRIVATE_DIR)  # one made by an older version was 0755
        for leftover in os.scandir(self._incoming):
            os.unlink(leftover.path)
        self._sync_dir(self._incoming)
        self._sync_dir(self.root)
        if created_root:
            self._sync_dir(self.root.parent)

    def _path(self, hash: str) -> Path:
        return self.root / hash[:2] / hash

    def _sync_dir(self, path: Path) -> None:
        """Make renames and unlinks in ``path`` durable."""
        if self._fsync:
            sync_dir(path)

    def put(self, data: bytes, expected_hash: str | None = None, *, age: float = 0.0) -> str:
        """See BlockStore.put (the age is the file's mtime). A stored copy of the wrong size is
        quarantined and replaced."""
        hash = _hash_checked(data, expected_hash)
        final = self._path(hash)
        size = memoryview(data).nbytes
        if _stat_size(final) == size:
            # Present already. Its rename may be another thread's, not yet fsynced: syncing
            # the directory (cheap when clean) makes our acknowledgement true.
            self._sync_dir(final.parent)
            return hash
        if self._keep_free:
            fs = os.statvfs(self.root)
            if fs.f_bavail * fs.f_frsize - size < self._keep_free:
                raise StorageFull(
                    f"no space for block {hash} under {self.root}: the last "
                    f"{self._keep_free} bytes free are kept for records"
                )
        try:
            self._store(hash, data, final, size, age)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise StorageFull(f"no space for block {hash} under {self.root}: {e}") from e
            raise
        return hash

    def _store(self, hash: str, data: bytes, final: Path, size: int, age: float) -> None:
        """Write, rename into place and sync a block that is not stored (or stored torn)."""
        temp: Path | None = self._write_temp(hash, data)
        try:
            if age:
                used = self.clock() - age
                os.utime(temp, (used, used))
            with self._lock:
                existing = _stat_size(final)
                if existing != size:
                    if existing is not None:
                        self._quarantine_locked(hash, final)
                    os.replace(temp, final)
                    temp = None
                    if self._count is not None:
                        self._count += 1
                        self._bytes += size
        finally:
            if temp is not None:
                os.unlink(temp)
        self._sync_dir(final.parent)

    def _write_temp(self, hash: str, data: bytes) -> Path:
        """Write ``data`` to a fresh read-only file under incoming/ and make it durable."""
        temp = self._incoming / f"{hash}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BLOCK_FILE)
        try:
            self._write_contents(fd, memoryview(data).cast("B"))
            if self._fsync:
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        os.close(fd)
        return temp

    def _write_contents(self, fd: int, data: memoryview) -> None:
        """Write the block-aligned bulk of ``data`` with direct I/O, the rest through the page
        cache. A durable block is flushed at once anyway, and on this kind of VM a page-cache
        write costs 1.3-4 ms of CPU per MiB against ~1 ms direct (profiled), which three
        replicas sharing two cores feel on every upload."""
        aligned = len(data) - len(data) % DIRECT_ALIGN if self._direct else 0
        if aligned:
            try:
                _set_direct(fd, True)
                staging = _staging_buffer(aligned)
                staging[:aligned] = data[:aligned]
                with memoryview(staging) as view:
                    _write_all(fd, view[:aligned])
                _set_direct(fd, False)
            except OSError as e:
                self._stop_direct_io(e, "writing")
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                aligned = 0
        _write_all(fd, data[aligned:])

    def _stop_direct_io(self, error: OSError, doing: str) -> None:
        """Re-raise `error` unless it says this file system has no direct I/O (EINVAL, as
        tmpfs); then go through the page cache from now on."""
        if error.errno != errno.EINVAL:
            raise error
        log.info("no direct I/O under %s (%s); %s through the page cache", self.root, error, doing)
        self._direct = False

    def get(self, hash: str) -> bytes:
        """See BlockStore.get."""
        path = self._path(check_hash(hash))
        try:
            with open(path, "rb", buffering=0) as file:
                opened = os.fstat(file.fileno())
                data = self._read_contents(file, opened.st_size)
        except FileNotFoundError:
            raise BlockNotFound(hash) from None
        except OSError as e:
            raise self._unreadable(hash, path, e) from e
        if block_hash(data) == hash:
            return data
        with self._lock:
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            # Quarantine only the copy we read; a concurrent put may have replaced it.
            same = current is not None and (current.st_ino, current.st_dev) == (
                opened.st_ino,
                opened.st_dev,
            )
            moved = self._quarantine_locked(hash, path) if same else None
        raise BlockCorrupt(hash, moved)

    def _read_contents(self, file: io.FileIO, size: int) -> bytes:
        """The whole file: the block-aligned bulk of a large block with direct I/O, the rest
        through the page cache. Blocks are written past the page cache, so a read fills it
        with pages no later write keeps warm, and on this kind of VM that fill costs ~2 ms of
        kernel CPU per MiB under load against ~0.1 ms direct (perf: `_copy_to_iter`); a
        small block is left to the page cache, where a hot one stays."""
        aligned = size - size % DIRECT_ALIGN if self._direct and size >= DIRECT_READ_MIN else 0
        if not aligned:
            return file.read()
        fd = file.fileno()
        try:
            _set_direct(fd, True)
        except OSError as e:
            self._stop_direct_io(e, "reading")
            return file.read()
        staging = _staging_buffer(aligned)
        with memoryview(staging) as view:
            got = 0
            while got < aligned:
                read = os.readv(fd, [view[got:aligned]])
                if not read:
                    break
                got += read
            _set_direct(fd, False)
            return b"".join((view[:got], file.read()))

    def _unreadable(self, hash: str, path: Path, error: OSError) -> BlockUnreadable:
        """The error for a copy that failed to read, moved to quarantine when the error is
        the copy's own (the medium, the file system); a passing shortage (descriptors, memory)
        leaves it in place."""
        log.warning("block %s: read failed: %s", hash, error)
        if error.errno not in _BAD_COPY:
            return BlockUnreadable(hash, error)
        with self._lock:
            try:
                moved = self._quarantine_locked(hash, path)
            except OSError as e:
                log.warning("block %s: cannot move the unreadable copy away: %s", hash, e)
                moved = None
        return BlockUnreadable(hash, error, moved)

    def _quarantine_locked(self, hash: str, path: Path) -> Path:
        """Move a bad copy out of the store (caller holds the lock); returns its new path."""
        size = path.stat().st_size
        target = self._quarantine / f"{hash}.{secrets.token_hex(4)}"
        os.replace(path, target)
        if self._count is not None:
            self._count -= 1
            self._bytes -= size
        self._sync_dir(self._quarantine)
        self._sync_dir(path.parent)
        return target

    def has(self, hash: str) -> bool:
        """See BlockStore.has."""
        return self._path(check_hash(hash)).is_file()

    def size(self, hash: str) -> int | None:
        """See BlockStore.size."""
        return _stat_size(self._path(check_hash(hash)))

    def delete(self, hash: str) -> bool:
        """See BlockStore.delete."""
        path = self._path(check_hash(hash))
        with self._lock:
            size = _stat_size(path)
            if size is None:
                return False
            os.unlink(path)
            if self._count is not None:
                self._count -= 1
                self._bytes -= size
        self._sync_dir(path.parent)
        return True

    def touch(self, hash: str) -> bool:
        """See BlockStore.touch (sets the file's mtime)."""
        try:
            os.utime(self._path(check_hash(hash)))
        except FileNotFoundError:
            return False
        return True

    def last_used(self, hash: str) -> float | None:
        """See BlockStore.last_used (the file's mtime)."""
        try:
            return os.stat(self._path(check_hash(hash))).st_mtime
        except FileNotFoundError:
            return None

    def hashes(self) -> Iterator[str]:
        """See BlockStore.hashes (each fan-out directory is listed as it is reached)."""
        for prefix in _FANOUT:
            for name in os.listdir(self.root / prefix):
                if _is_block_name(prefix, name):
                    yield name

    def stats(self) -> BlockStats:
        """See BlockStore.stats (the first call scans the store, later ones are O(1))."""
        with self._lock:
            if self._count is None:
                count = total = 0
                for prefix in _FANOUT:
                    for entry in os.scandir(self.root / prefix):
                        if _is_block_name(prefix, entry.name) and entry.is_file():
                            count += 1
                            total += entry.stat().st_size
                self._count, self._bytes = count, total
            return BlockStats(self._count, self._bytes, len(self.quarantined()))

    def quarantined(self) -> list[str]:
        """See BlockStore.quarantined (read from ``root/quarantine/``, so it survives restarts)."""
        names = {name[:64] for name in os.listdir(self._quarantine)}
        return sorted(name for name in names if _HASH_RE.fullmatch(name))


def _hash_checked(data: bytes, expected_hash: str | None) -> str:
    if expected_hash is not None:
        check_hash(expected_hash)
    hash = block_hash(data)
    if expected_hash is not None and hash != expected_hash:
        raise HashMismatch(expected_hash, hash)
    return hash


def _is_block_name(prefix: str, name: str) -> bool:
    """Whether ``name`` in fan-out folder ``prefix`` is a block file (strays are ignored)."""
    return name.startswith(prefix) and _HASH_RE.fullmatch(name) is not None


def _stat_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
