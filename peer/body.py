"""File contents on their way into the coordinator, read a block at a time without blocking.

The coordinator reads every file it writes through a `BodyReader`. A front end supplies one: the
HTTP API streams an upload as it arrives (`peer.api.incoming.IncomingBody`), so replication
starts with the first block instead of after the last byte; `FileBody` gives the same interface
over an ordinary file (tests, the simulator).
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class BodyReader(Protocol):
    """Where the bytes of a file being written come from."""

    async def read(self, size: int) -> bytes:
        """The next `size` bytes; fewer only at the end, b"" once everything was read."""
        ...


class FileBody:
    """A BodyReader over a blocking file object."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def read(self, size: int) -> bytes:
        parts = []
        while size > 0:
            part = self._file.read(size)
            if not part:
                break
            parts.append(part)
            size -= len(part)
        return b"".join(parts)


class PrefixedBody:
    """A BodyReader with `head`, already read from `rest`, put back in front of it."""

    def __init__(self, head: bytes, rest: BodyReader) -> None:
        self._head = head
        self._rest = rest

    async def read(self, size: int) -> bytes:
        if not self._head:
            return await self._rest.read(size)
        chunk, self._head = self._head[:size], self._head[size:]
        if len(chunk) < size:
            chunk += await self._rest.read(size - len(chunk))
        return chunk
