"""Uploads and downloads of local files and folders through the client, with progress.

Plain functions run inside worker threads; ``progress(done, total)`` reports bytes moved, and a
``cancelled()`` that turns true stops the transfer at the next chunk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from peer.client.api_client import Client
from tui.connection import Connection
from tui.widgets.dir_tree import child_path

Progress = Callable[[int, int | None], None]


class Cancelled(Exception):
    """The user (or the app closing) stopped the transfer."""


def upload_plan(local: Path, remote_dir: str) -> list[tuple[Path, str, int]]:
    """(local file, remote path, size) for a file, or for every file under a folder.

    A folder ``photos`` uploaded into ``/a`` lands as ``/a/photos/...``.
    """
    if local.is_file():
        return [(local, child_path(remote_dir, local.name), local.stat().st_size)]
    if not local.is_dir():
        raise FileNotFoundError(f"no such local file or folder: {local}")
    plan = []
    base = child_path(remote_dir, local.name)
    for folder, dirnames, filenames in os.walk(local):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(folder) / name
            relative = path.relative_to(local).as_posix()
            plan.append((path, base + "/" + relative, path.stat().st_size))
    return plan


def upload(
    connection: Connection,
    plan: list[tuple[Path, str, int]],
    progress: Progress,
    cancelled: Callable[[], bool],
) -> int:
    """Put every file of ``plan``; returns the bytes sent. Fails over between files' retries."""
    total = sum(size for _, _, size in plan)
    sent = 0
    for local, remote, _ in plan:

        def report(done: int, _total: int | None, base: int = sent) -> None:
            if cancelled():
                raise Cancelled
            progress(base + done, total)

        def put(client: Client, local: Path = local, remote: str = remote) -> None:
            with local.open("rb") as source:
                client.put(remote, source, mode=local.stat().st_mode & 0o777, progress=report)

        connection.call(put)
        sent += local.stat().st_size
        progress(sent, total)
    return sent


def download(
    connection: Connection,
    remote: str,
    local: Path,
    progress: Progress,
    cancelled: Callable[[], bool],
) -> int:
    """Get ``remote`` into ``local`` (written to a temporary file, renamed when complete)."""

    def report(done: int, total: int | None) -> None:
        if cancelled():
            raise Cancelled
        progress(done, total)

    def get(client: Client) -> int:
        fd, temp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as sink:
                info = client.get(remote, sink, progress=report)
            if info.mode is not None:
                os.chmod(temp, info.mode)
            os.replace(temp, local)
        except BaseException:
            os.unlink(temp)
            raise
        return info.size

    return connection.call(get)
