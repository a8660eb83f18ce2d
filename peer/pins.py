"""What garbage collection must spare whatever its grace period: blocks that writes in progress
will reference, and blocks stored or touched since a collection round began.

A write stores its blocks first and its manifest last, so for a while its blocks are referenced
by nothing. `BlockPins` holds them from before the first block is sent (or found already
stored) until the manifest is durable; a collection round reads every peer's pins before any
peer's references, so each block of a write is either pinned or already referenced when it is
looked at. `BlockActivity` covers what the pins cannot see: a block that arrives on this peer
after the round began is never swept by that round. Neither depends on a clock, so the grace
need not cover an upload (docs/semantics.md names the one window it still covers: a peer that
joined a moment ago).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class BlockPins:
    """Block hashes pinned by this peer's writes in progress (counted: two writes of one block
    each hold it)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def hold(self, hashes: Iterable[str]) -> None:
        """Pin `hashes` until `release`d."""
        self._counts.update(hashes)

    def release(self, hashes: Iterable[str]) -> None:
        """Drop one pin of each of `hashes`."""
        self._counts.subtract(hashes)
        for block in [b for b, count in self._counts.items() if count <= 0]:
            del self._counts[block]

    @contextmanager
    def pinned(self, hashes: Iterable[str]) -> Iterator[None]:
        """Pin `hashes` for the duration of a `with` block."""
        held = list(hashes)
        self.hold(held)
        try:
            yield
        finally:
            self.release(held)

    def held(self) -> set[str]:
        """Every block pinned now."""
        return set(self._counts)


class BlockActivity:
    """When each block was last stored or touched on this peer, as a sequence number.

    A collection round takes a `mark` when it starts; a block noted after it is not swept by
    that round. A store or a touch is noted *before* it happens and a sweep checks and deletes
    under the same lock (`delete_unless_noted`), so a block stored while a sweep runs is either
    spared or stored again after its deletion, never lost. Entries older than every open mark
    are dropped, so the table holds only what moved while rounds were running. Thread-safe.
    """

    MAX_OPEN = 8  # marks of rounds that never finished are dropped beyond this many

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._last: dict[str, int] = {}
        self._now = 0
        self._open: dict[int, int] = {}  # mark -> rounds holding it

    def note(self, blocks: Iterable[str]) -> None:
        """`blocks` are about to be stored or touched."""
        with self._lock:
            for block in blocks:
                self._now = next(self._sequence)
                if self._open:
                    self._last[block] = self._now

    def delete_unless_noted(self, block: str, mark: int, delete: Callable[[str], bool]) -> bool:
        """Run `delete(block)` unless the block was noted after `mark` (or `mark` is no longer
        open, so that cannot be told); True if it ran and returned True."""
        with self._lock:
            if mark not in self._open or self._last.get(block, 0) > mark:
                return False
            return delete(block)

    def mark(self) -> int:
        """Open a mark at the current point; close it with `done`."""
        with self._lock:
            self._open[self._now] = self._open.get(self._now, 0) + 1
            while sum(self._open.values()) > self.MAX_OPEN:
                self._close(min(self._open))
            return self._now

    def done(self, mark: int) -> None:
        """Close `mark`; forget what no open mark can ask about any more."""
        with self._lock:
            self._close(mark)

    def _close(self, mark: int) -> None:
        left = self._open.get(mark, 0) - 1
        if left > 0:
            self._open[mark] = left
        else:
            self._open.pop(mark, None)
        oldest = min(self._open, default=None)
        if oldest is None:
            self._last.clear()
        else:
            self._last = {b: seq for b, seq in self._last.items() if seq > oldest}
