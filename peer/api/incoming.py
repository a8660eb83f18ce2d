"""An upload's body as it arrives from the network, read by the coordinator a block at a time.

The HTTP layer writes the pieces the client sends and the coordinator reads them as blocks
(it is a `peer.body.BodyReader`), so a peer holds at most a few blocks of any upload.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer


class BodyLost(Exception):
    """The client went away before its whole body arrived."""



class IncomingBody:
    """A request body as it arrives from the network.

    The HTTP side calls `write` for each piece, then `finish` (whole body in) or `close`
    (connection gone). The reader side awaits `read`. While more than `high_water` bytes wait
    unread, the client's connection (`producer`) is paused; TCP then slows the client down.
    """

    def __init__(self, producer: IPushProducer, high_water: int) -> None:
        self._producer = producer
        self._high_water = high_water
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._paused = False
        self._discarding = False
        self._error: Exception | None = None
        self._complete = False
        self._arrived: defer.Deferred[None] | None = None
        self._wanted = 0  # what the waiting read needs buffered before it is woken
        self._settled: list[defer.Deferred[None]] = []

    # -- the HTTP side (what twisted.web expects of a request's `content`) -----------------

    def write(self, data: bytes) -> None:
        self._received += len(data)
        if self._discarding or self._error is not None:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._high_water and not self._paused:
            self._paused = True
            self._producer.pauseProducing()
            self._wake()  # a read wanting more than high water resumes the client
        elif self._buffered >= self._wanted:
            self._wake()  # not per piece: TLS hands over 16 KiB records, a block is 1 MiB

    def tell(self) -> int:
        return self._received

    def seek(self, offset: int, whence: int = 0) -> None:
        """Nothing to rewind: the body is read once, as it arrives."""

    def finish(self) -> None:
        """The whole body has arrived."""
        self._complete = True
        self._wake()
        self._settle()

    def close(self) -> None:
        """The request is over; a body still arriving never will."""
        if not self._complete and self._error is None:
            self._error = BodyLost(
                f"the connection closed after {self._received} bytes of the body"
            )
        self._chunks.clear()
        self._buffered = 0
        self._wake()
        self._settle()

    def hold(self) -> None:
        """Read nothing more from the client until the first `read` (or `discard`): the
        request is not authenticated yet, and only what one network read brought is kept."""
        if not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    # -- the reader side -------------------------------------------------------------------

    async def read(self, size: int) -> bytes:
        while self._buffered < size and not self._complete:
            if self._error is not None:
                raise self._error
            self._resume()
            self._wanted = size
            self._arrived = defer.Deferred()
            await self._arrived
        if self._error is not None:
            raise self._error
        chunk = self._take(size)
        if self._buffered <= self._high_water // 2:
            self._resume()
        return chunk

    def discard(self) -> None:
        """Drop what is buffered and whatever else arrives (the request failed early)."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._resume()

    async def settled(self) -> None:
        """Wait until the whole body has arrived or the connection has closed."""
        if self._complete or self._error is not None:
            return
        waiter: defer.Deferred[None] = defer.Deferred()
        self._settled.append(waiter)
        await waiter

    # -- internals -------------------------------------------------------------------------

    def _take(self, size: int) -> bytes:
        parts = []
        wanted = size
        while wanted and self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > wanted:
                self._chunks.appendleft(chunk[wanted:])
                chunk = chunk[:wanted]
            parts.append(chunk)
            wanted -= len(chunk)
        taken = b"".join(parts)
        self._buffered -= len(taken)
        return taken

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._producer.resumeProducing()

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.callback(None)

    def _settle(self) -> None:
        waiters, self._settled = self._settled, []
        for waiter in waiters:
            waiter.callback(None)
