"""A progress bar for large transfers, drawn on a terminal and nowhere else.

``transfer_progress`` yields a ``ProgressFn`` for the client library. The bar appears only once
a transfer is known to reach ``threshold`` bytes and only when the stream is a terminal, so
pipes, logs and tests never see it. Rich is imported only when a bar is actually drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from peer.client import ProgressFn

THRESHOLD = 8 * 1024 * 1024


class _Bar:
    """Starts a transient rich progress bar on the first report of a large enough transfer."""

    def __init__(self, label: str, stream: TextIO, threshold: int) -> None:
        self._label = label
        self._stream = stream
        self._threshold = threshold
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
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
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
