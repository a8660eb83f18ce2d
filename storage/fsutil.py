"""Small durable-filesystem helpers shared by the storage modules."""

from __future__ import annotations

import errno
import os
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
    """Replace ``path`` with ``data`` so a crash leaves the old file or the new, never a mix."""
    path = Path(path)
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    sync_dir(path.parent)
