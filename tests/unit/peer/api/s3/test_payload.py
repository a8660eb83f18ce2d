"""aws-chunked decoding and the digests a body is checked against."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib

import pytest
from twisted.internet import defer

from peer.api.s3 import sigv4
from peer.api.s3.errors import S3Error
from peer.api.s3.payload import DIGEST_BACKLOG, DIGEST_HERE, AwsChunked, Verified, checksum
from peer.body import FileBody
from tests.simnet import run


class Trickle:
    """A body that arrives a few bytes at a time (chunk headers split across reads)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data, self._step = data, step

    async def read(self, size: int) -> bytes:
        piece, self._data = self._data[: min(size, self._step)], self._data[min(size, self._step) :]
        return piece


def read_all(body, size: int = 1000) -> bytes:
    async def go() -> bytes:
        parts = []
        while True:
            part = await body.read(size)
            parts.append(part)
            if len(part) < size:
                return b"".join(parts)

    return run(go())


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def unsigned_chunked(data: bytes, sizes: list[int], trailer: str) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += f"{size:x}\r\n".encode() + data[at : at + size] + b"\r\n"
        at += size
    return out + b"0\r\n" + trailer.encode() + b"\r\n\r\n"


def test_unsigned_trailer_body_decodes_and_its_crc32_is_checked() -> None:
    data = bytes(range(256)) * 40
    crc = b64(zlib.crc32(data).to_bytes(4, "big"))
    raw = unsigned_chunked(data, [4000, 4000, 2240], f"x-amz-checksum-crc32:{crc}")
    chunked = AwsChunked(Trickle(raw), None, 1 << 20)
    body = Verified(
        chunked, late=lambda: chunked.trailers, late_algorithm="crc32", length=len(data)
    )
    assert read_all(body) == data
    assert body.md5 == hashlib.md5(data).hexdigest()

    bad = unsigned_chunked(data, [10240], "x-amz-checksum-crc32:AAAAAA==")
    chunked = AwsChunked(FileBody(io.BytesIO(bad)), None, 1 << 20)
    body = Verified(chunked, late=lambda: chunked.trailers, late_algorithm="crc32")
    with pytest.raises(S3Error) as e:
        read_all(body)
    assert e.value.code == "BadDigest"


def test_signed_chunks_are_checked_and_a_tampered_chunk_is_refused() -> None:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host,"
        "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    )
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    signed = sigv4.parse_header(auth, "20130524T000000Z")
    key = sigv4.signing_key(secret, signed.credential)
    sig1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    sig2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    sig3 = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    raw = (
        f"10000;chunk-signature={sig1}\r\n".encode()
        + b"a" * 65536
        + f"\r\n400;chunk-signature={sig2}\r\n".encode()
        + b"a" * 1024
        + f"\r\n0;chunk-signature={sig3}\r\n\r\n".encode()
    )
    body = AwsChunked(Trickle(raw, 5000), sigv4.ChunkSigner(key, signed), 1 << 20)
    assert read_all(body, 4096) == b"a" * 66560
    tampered = raw.replace(b"a" * 10, b"b" * 10, 1)
    body = AwsChunked(FileBody(io.BytesIO(tampered)), sigv4.ChunkSigner(key, signed), 1 << 20)
    with pytest.raises(S3Error) as e:
        read_all(body, 4096)
    assert e.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "raw, complaint",
    [
        (b"zz\r\nabc", "bad chunk size"),
        (b"100000000\r\n", "chunk of"),
        (b"3\r\nabcXX0\r\n\r\n", "CRLF"),
        (b"5" * 5000, "longer than"),
        (b"a\r\nabc", "ended before"),
    ],
)
def test_malformed_chunked_bodies_are_refused_with_a_reason(raw: bytes, complaint: str) -> None:
    body = AwsChunked(FileBody(io.BytesIO(raw)), None, 1 << 20)
    with pytest.raises(S3Error, match=complaint):
        read_all(body)


def test_content_sha256_content_md5_and_header_checksums_are_verified() -> None:
    data = b"hello world" * 1000
    good = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_md5": b64(hashlib.md5(data).digest()),
        "checksums": {
            "crc32": b64(zlib.crc32(data).to_bytes(4, "big")),
            "sha256": b64(hashlib.sha256(data).digest()),
        },
    }
    assert read_all(Verified(FileBody(io.BytesIO(data)), **good)) == data
    for name, value, code in [
        ("sha256", "0" * 64, "XAmzContentSHA256Mismatch"),
        ("content_md5", b64(b"x" * 16), "BadDigest"),
        ("checksums", {"crc32": "AAAAAA=="}, "BadDigest"),
    ]:
        with pytest.raises(S3Error) as e:
            read_all(Verified(FileBody(io.BytesIO(data)), **{**good, name: value}))
        assert e.value.code == code
    with pytest.raises(S3Error, match="bytes of a"):
        read_all(Verified(FileBody(io.BytesIO(data)), length=len(data) + 1))


def test_crc32c_matches_the_rfc_3720_check_value() -> None:
    crc = checksum("crc32c")
    crc.update(b"123456789")
    assert crc.digest().hex() == "e3069283"


@pytest.mark.parametrize("checksum", ["crc32", "sha256"])
def test_botocore_aws_chunked_bodies_with_checksum_trailers_decode(checksum: str) -> None:
    """The body boto3 sends over HTTPS (STREAMING-UNSIGNED-PAYLOAD-TRAILER), made by botocore."""
    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum

    data = os.urandom(300_000)
    kind = {"crc32": Crc32Checksum, "sha256": Sha256Checksum}[checksum]
    name = f"x-amz-checksum-{checksum}"
    raw = AwsChunkedWrapper(io.BytesIO(data), kind, name, chunk_size=64 * 1024).read()
    chunked = AwsChunked(FileBody(io.BytesIO(raw)), None, 1 << 20)
    body = Verified(
        chunked, late=lambda: chunked.trailers, late_algorithm=checksum, length=len(data)
    )
    assert read_all(body, 100_000) == data
    assert name in chunked.trailers
    broken = raw.replace(data[1000:1010], bytes(10), 1)
    chunked = AwsChunked(FileBody(io.BytesIO(broken)), None, 1 << 20)
    body = Verified(chunked, late=lambda: chunked.trailers, late_algorithm=checksum)
    with pytest.raises(S3Error) as e:
        read_all(body, 100_000)
    assert e.value.code == "BadDigest"


class HeldJobs:
    """A run_in_thread whose jobs run only when the test says (a thread pool, under control)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[object, defer.Deferred]] = []

    def __call__(self, job):  # type: ignore[no-untyped-def]
        done: defer.Deferred = defer.Deferred()
        self.jobs.append((job, done))
        return done

    def run_all(self) -> None:
        while self.jobs:
            job, done = self.jobs.pop(0)
            job()  # type: ignore[operator]
            done.callback(None)


def test_digests_run_off_the_reader_in_order_with_a_bounded_backlog() -> None:
    size = DIGEST_HERE  # chunks this large go to the thread
    data = os.urandom(8 * size)
    held = HeldJobs()
    body = Verified(
        FileBody(io.BytesIO(data + b"end")),
        sha256=hashlib.sha256(data + b"end").hexdigest(),
        run_in_thread=held,
    )
    reads = [defer.ensureDeferred(body.read(size)) for _ in range(DIGEST_BACKLOG)]
    assert all(read.called for read in reads)  # handed on before they are digested
    waiting = defer.ensureDeferred(body.read(size))
    assert not waiting.called  # one chunk more than the backlog allows: it waits
    held.run_all()
    assert waiting.called
    rest = [defer.ensureDeferred(body.read(size)) for _ in range(8 - DIGEST_BACKLOG - 1)]
    last = defer.ensureDeferred(body.read(size))  # the short read: the end of the body
    assert not last.called and body.md5 is None  # the checks wait for every digest
    held.run_all()
    got = b"".join(d.result for d in [*reads, waiting, *rest, last])
    assert got == data + b"end"
    assert body.md5 == hashlib.md5(data + b"end").hexdigest()


def test_a_small_body_is_digested_at_once_without_a_thread() -> None:
    held = HeldJobs()
    body = Verified(FileBody(io.BytesIO(b"x" * 4096)), run_in_thread=held)
    assert read_all(body, 65536) == b"x" * 4096
    assert not held.jobs and body.md5 == hashlib.md5(b"x" * 4096).hexdigest()


def test_a_digest_mismatch_found_in_a_thread_fails_the_last_read() -> None:
    held = HeldJobs()
    data = b"y" * (DIGEST_HERE + 1)
    body = Verified(FileBody(io.BytesIO(data)), sha256="0" * 64, run_in_thread=held)
    last = defer.ensureDeferred(body.read(2 * DIGEST_HERE))
    held.run_all()
    failures: list = []
    last.addErrback(failures.append)
    assert failures and failures[0].check(S3Error)
