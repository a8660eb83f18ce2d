"""Progress bars for large transfers and large directory moves, drawn on a terminal only.

``transfer_progress`` yields a ``ProgressFn`` for the client library. The bar appears only once
a transfer is known to reach ``threshold`` bytes and only when the stream is a terminal, so
pipes, logs and tests never see it. Rich is imported only when a bar is actually drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from peer.client.api_client import Client, ProgressFn, QfsError

THRESHOLD = 8 * 1024 * 1024
TREE_THRESHOLD = 100
POLL_SECONDS = 0.5
T = TypeVar("T")


class _Bar:
    """Starts a transient rich progress bar on the first report of a large enough transfer
    (counted in bytes, or in files when `files` is set)."""

    def __init__(self, label: str, stream: TextIO, threshold: int, files: bool = False) -> None:
        self._label = label
        self._stream = stream
        self._threshold = threshold
        self._files = files
        self._enabled = stream.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._progress is None:
            if not self._enabled or max(done, total or 0) < self._threshold:
                return
            self._start()
        self._progress.update(self._task, completed=done, total=total)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        amounts = (
            [MofNCompleteColumn(), TextColumn("files")]
            if self._files
            else [DownloadColumn(), TransferSpeedColumn()]
        )
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *amounts,
            TimeRemainingColumn(),
            console=Console(file=self._stream),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._label, total=None)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def transfer_progress(
    label: str, stream: TextIO | None = None, threshold: int = THRESHOLD
) -> Iterator[ProgressFn]:
    """A progress callback drawing on ``stream`` (stderr by default) if it is a terminal."""
    bar = _Bar(label, sys.stderr if stream is None else stream, threshold)
    try:
        yield bar
    finally:
        bar.close()


def count_files(client: Client, path: str) -> int:
    """Files below the directory `path` (0 when it is not a directory or cannot be listed)."""
    try:
        entries = client.ls(path)
    except (QfsError, ValueError):
        return 0
    base = path.rstrip("/")
    return sum(
        count_files(client, f"{base}/{e['name']}") if e.get("type") == "dir" else 1 for e in entries
    )


def tree_progress(
    client: Client,
    label: str,
    src: str,
    dst: str,
    run: Callable[[], T],
    stream: TextIO | None = None,
    threshold: int = TREE_THRESHOLD,
) -> T:
    """Run a directory move or copy (`run`), drawing how many of the source's files have
    appeared at `dst` while it runs. Only on a terminal and for trees of `threshold` files or
    more; otherwise just `run()`. The count is what a listing shows, polled every half second.
    """
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return run()
    total = count_files(client, src)
    if total < threshold:
        return run()
    bar = _Bar(label, stream, threshold, files=True)
    try:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(run)
            while True:
                try:
                    result = job.result(timeout=POLL_SECONDS)
                except FutureTimeout:
                    bar(min(count_files(client, dst), total), total)
                    continue
                bar(total, total)
                return result
    finally:
        bar.close()
