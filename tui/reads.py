"""Partial reads over the client's streaming get: a file's head, or just its conflict state.

The client streams a whole file into a sink; these sinks stop the stream early by raising,
which closes the response, so a preview of a 10 GiB file costs only its first bytes.
"""

from __future__ import annotations

import contextlib

from peer.client.api_client import Client, Conflict


class _Enough(Exception):
    """Raised by a sink to stop the transfer: it has what it wanted."""


class _HeadSink:
    """A write-only file that keeps the first ``limit`` bytes, then stops the transfer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk[: self.limit - len(self.data)]
        if len(self.data) >= self.limit:
            raise _Enough
        return len(chunk)


def read_head(client: Client, path: str, limit: int, version: str | None = None) -> bytes:
    """The first ``limit`` bytes of ``path`` (or of its sibling ``version``); may raise Conflict."""
    sink = _HeadSink(limit)
    with contextlib.suppress(_Enough):
        client.get(path, sink, version=version)  # type: ignore[arg-type]
    return bytes(sink.data)


def conflict_of(client: Client, path: str) -> Conflict | None:
    """The Conflict a read of ``path`` meets, or None when it has one version (nothing is read)."""
    try:
        read_head(client, path, 0)
    except Conflict as conflict:
        return conflict
    return None
