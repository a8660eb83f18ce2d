"""Small durable-filesystem helpers shared by the storage modules."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(OSError):
    """A write found the disk (or the quota) full; nothing of it was stored. Reads still work,
    and writes work again once space is freed."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ENOSPC, detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def sync_dir(path: str | Path) -> None:
    """fsync a directory, making the creations, renames and unlinks in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (a file only its owner reads, as every file of a data
    directory is) so a crash leaves the old file or the new, never a mix; a write that fails
    leaves no temporary file behind."""
    path = Path(path)
    temp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


class SpaceReserve:
    """A file that holds space back on a data directory's file system (at most MAX bytes, at
    most 1/16 of it). When the disk is full the peer gives it up to record what it must record
    before it may free anything (its collection rounds), and takes it again once there is room:
    blocks and records can fill a disk, but never so far that the collector cannot run. Worker
    threads take and give it up at once (collection sweeps served together): one at a time,
    or two writes of the one file race."""

    MAX = 4 * 1024 * 1024

    def __init__(self, path: str | Path) -> None:
        """`path` is in the data directory, which must exist; the size is fixed here (block
        stores keep that much free too, so a reserve given up goes to records, not to the next
        blocks)."""
        self.path = Path(path)
        fs = os.statvfs(self.path.parent)
        self.size = min(self.MAX, fs.f_blocks * fs.f_frsize // 16)
        self._lock = threading.Lock()

    def keep(self) -> bool:
        """Hold the reserve (when at least twice its size is free); whether it is held."""
        with self._lock:
            if self.path.exists():
                return True
            fs = os.statvfs(self.path.parent)
            if fs.f_bavail * fs.f_frsize < 2 * self.size:
                return False
            try:
                write_atomic(self.path, bytes(self.size))
            except OSError as e:
                if e.errno in NO_SPACE:
                    return False
                raise
            return True

    def release(self) -> bool:
        """Give the reserve's space back to the file system; whether there was one."""
        with self._lock:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return False
            return True
