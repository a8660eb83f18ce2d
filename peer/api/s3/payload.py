"""Request bodies of the S3 API on their way into the coordinator: aws-chunked decoding and
the digests a client asks us to check.

Both are `peer.body.BodyReader`s stacked on the raw body: `AwsChunked` strips the chunk
framing (checking each chunk's signature when the body is signed, and collecting the trailer's
checksums), `Verified` computes the MD5 (the object's ETag) and whatever digests the request
announced (off the reactor, `Digests`), and raises an S3 error at the end of the body when one
does not match, so the coordinator fails the write before any manifest points at the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from crc32c import CRC32CHash
from twisted.internet import defer
from twisted.python.failure import Failure

from peer.api.s3.errors import S3Error, bad_request
from peer.api.s3.sigv4 import ChunkSigner
from peer.body import BodyReader

MAX_LINE = 4096  # a chunk header or trailer line
MAX_TRAILERS = 16
READ_SIZE = 256 * 1024
CHECKSUMS = ("crc32", "crc32c", "sha1", "sha256")
DIGEST_BACKLOG = 2  # chunks (blocks: 1 MiB) received but not yet digested, at most
DIGEST_HERE = 64 * 1024  # a chunk this small is digested at once: a thread hop costs more

RunInThread = Callable[[Callable[[], None]], "defer.Deferred[None]"]


def run_here(job: Callable[[], None]) -> defer.Deferred[None]:
    """Run `job` now, in this thread (where no thread pool is given: tests)."""
    return defer.maybeDeferred(job)


class Digests:
    """Feeds chunks to hashers, in order, in jobs of `run_in_thread`, so that the reactor goes
    on meanwhile: MD5 alone costs 1.9 ms per MiB here, SHA-256 0.8 and CRC-32 0.4, a third of
    what a coordinator spends on a block; hashlib and zlib let go of the GIL while they hash.
    One job at a time takes every chunk queued, so the order is kept; a small chunk with none
    before it is digested at once (a 4 KiB object's whole body)."""

    def __init__(self, hashers: list[Any], run_in_thread: RunInThread) -> None:
        self._hashers = hashers
        self._run = run_in_thread
        self._queue: deque[bytes] = deque()
        self._job: defer.Deferred[None] | None = None
        self._error: Failure | None = None
        self._waiters: list[defer.Deferred[None]] = []

    def feed(self, data: bytes) -> None:
        if self._job is None and len(data) < DIGEST_HERE:
            self._digest(data)
            return
        self._queue.append(data)
        if self._job is None:
            self._start()

    async def drained(self, backlog: int = 0) -> None:
        """Wait until at most `backlog` chunks wait to be digested (0: all are digested)."""
        while self._error is None and (
            len(self._queue) > backlog or (backlog == 0 and self._job is not None)
        ):
            waiter: defer.Deferred[None] = defer.Deferred()
            self._waiters.append(waiter)
            await waiter
        if self._error is not None:
            self._error.raiseException()

    def _start(self) -> None:
        self._job = self._run(self._digest_queued)
        self._job.addBoth(self._ended)

    def _digest(self, data: bytes) -> None:
        for hasher in self._hashers:
            hasher.update(data)

    def _digest_queued(self) -> None:  # in the job's thread; deque ends are thread-safe
        while self._queue:
            self._digest(self._queue.popleft())

    def _ended(self, result: object) -> None:
        self._job = None
        if isinstance(result, Failure):
            self._error = result
            self._queue.clear()
        elif self._queue:
            self._start()  # chunks fed after the job looked for the last time
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


class Crc32:
    """CRC-32 with the hashlib interface."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


def checksum(algorithm: str) -> Any:
    """A fresh hasher for an x-amz-checksum-* algorithm (one of CHECKSUMS)."""
    if algorithm == "crc32":
        return Crc32()
    if algorithm == "crc32c":
        return CRC32CHash()  # C, hardware-assisted (pure Python managed 7 MB/s)
    return hashlib.new(algorithm)


class AwsChunked:
    """The decoded content of an ``aws-chunked`` body: ``SIZE[;chunk-signature=SIG]\\r\\n``,
    the data, ``\\r\\n``, ..., a zero-size chunk, then optional trailer lines and a blank line.
    With a `signer` every chunk's signature is checked as its data ends."""

    def __init__(self, raw: BodyReader, signer: ChunkSigner | None, max_chunk: int) -> None:
        self._raw = raw
        self._signer = signer
        self._max_chunk = max_chunk
        self._buffer = b""
        self._left = 0  # data bytes of the current chunk still to deliver
        self._chunk_hash: Any = None
        self._chunk_signature = ""
        self._started = False
        self._done = False
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    async def read(self, size: int) -> bytes:
        parts = []
        while size > 0 and not self._done:
            if self._left == 0:
                await self._next_chunk()
                continue
            data = await self._take(min(size, self._left))
            self._left -= len(data)
            size -= len(data)
            self.decoded += len(data)
            if self._chunk_hash is not None:
                self._chunk_hash.update(data)
            parts.append(data)
            if self._left == 0:
                self._end_chunk()
        return b"".join(parts)

    def _end_chunk(self) -> None:
        if self._signer is not None:
            self._signer.check(self._chunk_hash.hexdigest(), self._chunk_signature)

    async def _next_chunk(self) -> None:
        if self._started and await self._take(2) != b"\r\n":
            raise _malformed("chunk data not followed by CRLF")
        self._started = True
        header = (await self._line()).decode("latin-1")
        size_text, _, extension = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _malformed(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0 or size > self._max_chunk:
            raise _malformed(f"chunk of {size} bytes (at most {self._max_chunk})")
        if self._signer is not None:
            name, _, value = extension.partition("=")
            if name != "chunk-signature" or len(value) != 64:
                raise _malformed("chunk without chunk-signature")
            self._chunk_signature = value
            self._chunk_hash = hashlib.sha256()
        self._left = size
        if size == 0:
            self._end_chunk()
            await self._read_trailers()
            self._done = True

    async def _read_trailers(self) -> None:
        lines: list[bytes] = []
        while True:
            line = await self._line(eof_ok=True)
            if not line:
                break
            lines.append(line)
            if len(lines) > MAX_TRAILERS + 1:
                raise _malformed(f"more than {MAX_TRAILERS} trailers")
        signed = b""
        for line in lines:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _malformed(f"trailer line {line[:40]!r} is not NAME:VALUE")
            name, value = name.strip().lower(), value.strip()
            if name == "x-amz-trailer-signature":
                if self._signer is not None:
                    self._signer.check_trailer(signed, value)
                continue
            signed += f"{name}:{value}\n".encode("latin-1")
            self.trailers[name] = value

    async def _line(self, eof_ok: bool = False) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                return line
            if len(self._buffer) > MAX_LINE:
                raise _malformed(f"chunk header or trailer longer than {MAX_LINE} bytes")
            more = await self._raw.read(READ_SIZE)
            if not more:
                if eof_ok and not self._buffer.strip():
                    return b""
                raise _malformed("body ended inside a chunk header")
            self._buffer += more

    async def _take(self, size: int) -> bytes:
        if len(self._buffer) < size:
            more = await self._raw.read(max(size - len(self._buffer), READ_SIZE))
            self._buffer += more
            if not more:
                raise S3Error(400, "IncompleteBody", "the body ended before its last chunk")
        if len(self._buffer) <= size:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _malformed(what: str) -> S3Error:
    return bad_request(f"malformed aws-chunked body: {what}", "InvalidRequest")


class Verified:
    """A body whose MD5 is computed (`md5`, once it has ended) and whose announced digests are
    checked when it ends: `sha256` (x-amz-content-sha256, hex), `content_md5` (base64) and
    x-amz-checksum-* values (base64), given up front or, for a trailer, by `late` once the
    inner body has ended. `length` is the exact decoded length when known."""

    def __init__(
        self,
        inner: BodyReader,
        *,
        sha256: str | None = None,
        content_md5: str | None = None,
        checksums: dict[str, str] | None = None,
        late: Callable[[], dict[str, str]] | None = None,
        late_algorithm: str | None = None,
        length: int | None = None,
        run_in_thread: RunInThread = run_here,
    ) -> None:
        self._inner = inner
        self._sha256 = sha256
        self._content_md5 = content_md5
        self._checksums = dict(checksums or {})
        self._late = late
        self._md5 = hashlib.md5()
        self._hashers: dict[str, Any] = {}
        for algorithm in [*self._checksums, *([late_algorithm] if late_algorithm else [])]:
            if algorithm in CHECKSUMS:
                self._hashers[algorithm] = checksum(algorithm)
        if sha256 is not None and "sha256" not in self._hashers:
            self._hashers["sha256-hex"] = hashlib.sha256()
        self._length = length
        self._digests = Digests([self._md5, *self._hashers.values()], run_in_thread)
        self.size = 0
        self.md5: str | None = None

    async def read(self, size: int) -> bytes:
        if self.md5 is not None:
            return b""
        data = await self._inner.read(size)
        self.size += len(data)
        if self._length is not None and self.size > self._length:
            raise S3Error(400, "IncompleteBody", "the body is longer than its declared length")
        if data:
            self._digests.feed(data)
        if len(data) < size:
            await self._digests.drained()
            self._finish()
        else:
            await self._digests.drained(DIGEST_BACKLOG)
        return data

    def _finish(self) -> None:
        digest = self._md5.digest()
        if self._length is not None and self.size != self._length:
            raise S3Error(
                400, "IncompleteBody", f"got {self.size} bytes of a {self._length}-byte body"
            )
        if self._content_md5 is not None and base64.b64encode(digest).decode() != self._content_md5:
            raise S3Error(
                400, "BadDigest", "the Content-MD5 you specified did not match what we received"
            )
        if self._sha256 is not None:
            hasher = self._hashers.get("sha256-hex") or self._hashers["sha256"]
            if hasher.hexdigest() != self._sha256:
                raise S3Error(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "the x-amz-content-sha256 you specified did not match what we received",
                )
        expected = dict(self._checksums)
        if self._late is not None:
            expected.update(
                {
                    name.removeprefix("x-amz-checksum-"): value
                    for name, value in self._late().items()
                    if name.startswith("x-amz-checksum-")
                }
            )
        for algorithm, value in expected.items():
            hasher = self._hashers.get(algorithm)
            if hasher is not None and base64.b64encode(hasher.digest()).decode() != value:
                raise S3Error(
                    400,
                    "BadDigest",
                    f"the {algorithm.upper()} checksum you sent does not match the body",
                )
        self.md5 = digest.hex()
