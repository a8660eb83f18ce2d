"""The scrubber: re-verifies every stored block in the background at a bounded rate.

A block whose bytes no longer hash to its name is quarantined by the block store on read;
the scrubber then fetches a verified copy from another replica and stores it again, so a
rotting disk heals without anyone reading the file. A block that cannot be read (an I/O error)
is handled the same way; a block that cannot be repaired now (no good copy reachable, a full
disk) is logged and skipped, and the pass carries on with the next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twisted.internet import defer

from peer.coordinator import Coordinator
from peer.errors import ApiError
from peer.manifest import Block
from peer.replica import RunInThread
from storage.blocks import BlockCorrupt, BlockNotFound, BlockStore, BlockUnreadable

log = logging.getLogger(__name__)


@dataclass
class ScrubCounters:
    """Scrub progress, for /metrics and /v1/cluster."""

    passes: int = 0
    verified: int = 0
    bytes_verified: int = 0
    corrupt: int = 0
    repaired: int = 0
    position: int = 0  # blocks verified in the current pass


class Scrubber:
    """Walks the block store, verifying at most `rate` bytes per second."""

    def __init__(
        self,
        coordinator: Coordinator,
        blocks: BlockStore,
        run_in_thread: RunInThread,
        sleep: Callable[[float], Awaitable[None]],
        rate: float,
    ) -> None:
        self._coordinator = coordinator
        self._blocks = blocks
        self._run = run_in_thread
        self._sleep = sleep
        self._rate = rate
        self._stopping = False
        self._nap: defer.Deferred[None] | None = None
        self.counters = ScrubCounters()

    def stop(self) -> None:
        """End the pass in progress now: after the current block, and without finishing the
        pause that paces it (the peer is shutting down)."""
        self._stopping = True
        if self._nap is not None:
            self._nap.cancel()

    async def run_pass(self) -> None:
        """Verify every block once (repairing corrupt ones), pacing reads to the rate."""
        hashes = await self._run(lambda: sorted(self._blocks.hashes()))
        self.counters.position = 0
        for block in hashes:
            if self._stopping:
                return
            size = await self._verify(block)
            self.counters.position += 1
            if size and not self._stopping:
                self._nap = defer.ensureDeferred(self._sleep(size / self._rate))
                try:
                    await self._nap
                except defer.CancelledError:
                    return
                finally:
                    self._nap = None
        self.counters.passes += 1

    async def _verify(self, block: str) -> int:
        try:
            data = await self._run(self._blocks.get, block)
        except BlockNotFound:
            return 0  # deleted since the listing
        except (BlockCorrupt, BlockUnreadable) as e:
            self.counters.corrupt += 1
            log.warning("scrub: %s", e)
            await self._repair(block)
            return 0
        self.counters.verified += 1
        self.counters.bytes_verified += len(data)
        return len(data)

    async def _repair(self, block: str) -> None:
        try:
            data = await self._coordinator.fetch_block(Block(block, 0))
        except ApiError as e:
            log.warning("scrub: no verified copy of %s to repair from: %s", block, e.detail)
            return
        try:
            await self._run(self._blocks.put, data, block)
        except OSError as e:  # a full or failing disk: the next pass tries again
            log.warning("scrub: cannot store block %s again: %s", block, e)
            return
        self.counters.repaired += 1
