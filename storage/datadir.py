"""One peer's data directory: an exclusive lock, a stable node id, blocks and records.

Layout::

    DIR/LOCK            flock'ed by the owning process, holds its pid (for error messages)
    DIR/node_id         32 lowercase hex digits, created once on first open and kept
    DIR/counter_mark    the version-counter high-water mark (CounterMark)
    DIR/blocks/         DiskBlockStore
    DIR/records.sqlite  RecordStore (plus its -wal and -shm files)

The lock is an ``fcntl.flock`` on an open file, so the kernel releases it when the owner dies,
however it dies; a stale LOCK file never blocks a restart.

The directory is 0700 and its files 0600 (the records hold every file's metadata and small
files' contents): a directory or file left more open by an older version is tightened on open.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import struct
import zlib
from pathlib import Path
from types import TracebackType

from storage.blocks import DiskBlockStore
from storage.fsutil import NO_SPACE, SpaceReserve, StorageFull, sync_dir, write_atomic
from storage.records import RecordStore

_NODE_ID_RE = re.compile(r"[0-9a-f]{32}\n?")
_SLOT = struct.Struct(">QI")  # mark, CRC-32 of the mark's 8 bytes
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class DataDirLocked(RuntimeError):
    """Another process (or another DataDir in this one) owns the data directory."""


class DataDir:
    """Exclusive owner of a peer's data directory (see the module docstring)."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        """Lock ``path`` (creating it), load or create the node id, open the stores.

        Raises DataDirLocked if another owner holds it, ValueError on a malformed node_id.
        """
        self.path = Path(path)
        created = not self.path.is_dir()
        self.path.mkdir(PRIVATE_DIR, parents=True, exist_ok=True)
        if created and fsync:
            sync_dir(self.path.parent)
        self._lock_fd: int | None = _acquire_lock(self.path / "LOCK")
        try:
            self.node_id = _load_node_id(self.path / "node_id")
            self.counter_mark = CounterMark(self.path / "counter_mark")
            self.reserve = SpaceReserve(self.path / "reserve")
            self.blocks = DiskBlockStore(
                self.path / "blocks", fsync=fsync, keep_free=self.reserve.size
            )
            self.records = RecordStore(self.path / "records.sqlite")
            self.reserve.keep()
            _tighten(self.path)  # last: every file of the directory exists by now
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        """Close the record store and release the lock. Idempotent."""
        if self._lock_fd is not None:
            self.records.close()
            self.counter_mark.close()
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> DataDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, node_id={self.node_id!r})"


def _tighten(path: Path) -> None:
    """The directory 0700 and every file directly in it 0600, whatever made it more open (an
    older version, the umask, a copy); the block folders are DiskBlockStore's."""
    os.chmod(path, PRIVATE_DIR)
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
            os.chmod(entry.path, PRIVATE_FILE)


def _acquire_lock(path: Path) -> int:
    """Take the exclusive non-blocking flock and record our pid; returns the open descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise DataDirLocked(
            f"data directory {path.parent} is in use by {who} (lock file {path})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _load_node_id(path: Path) -> str:
    """Read the node id, creating it on first start; ValueError naming the file if malformed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        node_id = secrets.token_hex(16)
        write_atomic(path, f"{node_id}\n".encode())
        return node_id
    text = raw.decode("ascii", "replace")
    if not _NODE_ID_RE.fullmatch(text):
        raise ValueError(
            f"{path}: malformed node id {text[:40]!r} (want 32 lowercase hex digits); "
            "fix or remove the file only if this directory should become a new node"
        )
    return text.strip()


class CounterMark:
    """A durable, only-growing integer: the high-water mark of this node's version counters.

    Two checksummed slots, written in place alternately (the older one each time) and
    fdatasync'd: a crash mid-write tears at most the slot being written, and the other still
    holds the previous mark; the mark is the larger valid slot. Writing in place allocates
    nothing, so the mark still moves on a full disk.
    """

    def __init__(self, path: Path) -> None:
        """Open (creating it with a mark of 0) or load the file; ValueError if no slot is valid."""
        self.path = path
        if not path.exists():
            write_atomic(path, _slot(0) * 2)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        raw = os.pread(self._fd, 2 * _SLOT.size, 0)
        slots = [_parse_slot(raw[i * _SLOT.size : (i + 1) * _SLOT.size]) for i in range(2)]
        valid = [mark for mark in slots if mark is not None]
        if not valid:
            os.close(self._fd)
            raise ValueError(
                f"{path}: both copies of the version-counter mark are damaged; remove the "
                "file only if the wall clock is known to be ahead of every write this node made"
            )
        self.value = max(valid)
        self._older = slots.index(min(slots, key=lambda m: -1 if m is None else m))

    def store(self, mark: int) -> None:
        """Raise the mark to `mark` durably (no-op when not higher); StorageFull when the disk
        refuses the write."""
        if mark <= self.value:
            return
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        try:
            os.pwrite(self._fd, _slot(mark), self._older * _SLOT.size)
            os.fdatasync(self._fd)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise StorageFull(f"no space to store the counter mark in {self.path}") from e
            raise
        self.value = mark
        self._older = 1 - self._older

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _slot(mark: int) -> bytes:
    packed = mark.to_bytes(8, "big")
    return _SLOT.pack(mark, zlib.crc32(packed))


def _parse_slot(raw: bytes) -> int | None:
    if len(raw) != _SLOT.size:
        return None
    mark, crc = _SLOT.unpack(raw)
    return mark if zlib.crc32(mark.to_bytes(8, "big")) == crc else None
