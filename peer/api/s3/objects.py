"""Object operations: PutObject, GetObject/HeadObject (Range, conditional headers),
DeleteObject, DeleteObjects and CopyObject, each one coordinator or namespace call on the
object's path. CopyObject copies no block data: the new manifest lists the source's blocks."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.internet import defer

from peer.api.http import Backpressure
from peer.api.s3.errors import S3Error, bad_request, from_api_error
from peer.api.s3.names import (
    EMPTY_MD5,
    bucket_path,
    http_time,
    iso_time,
    manifest_etag,
    object_path,
    quoted,
)
from peer.api.s3.payload import Verified
from peer.api.s3.xml import document, parse, text_of
from peer.coordinator import StoredContent
from peer.errors import ApiError, IsADirectory, NotADirectory, NotEmpty, NotFound
from peer.manifest import DIRECTORY, Manifest
from peer.paths import parent

if TYPE_CHECKING:
    from peer.api.s3.server import Call, S3Resource

log = logging.getLogger(__name__)

META_HEADERS = (
    "content-type",
    "content-disposition",
    "content-encoding",
    "content-language",
    "cache-control",
    "expires",
)
MAX_USER_META = 2048  # bytes of x-amz-meta-* names and values, S3's limit
MAX_DELETE = 1000
DELETE_CONCURRENCY = 16
DEFAULT_TYPE = "binary/octet-stream"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def request_meta(call: Call) -> tuple[tuple[str, str], ...]:
    """What a PUT asks to store with the object: standard headers and x-amz-meta-*."""
    pairs = []
    for name in META_HEADERS:
        value = call.header(name)
        if name == "content-encoding" and value is not None:
            value = ",".join(v for v in (p.strip() for p in value.split(",")) if v != "aws-chunked")
        if value:
            pairs.append((name, value))
    user = sorted((n, v[-1]) for n, v in call.headers.items() if n.startswith("x-amz-meta-"))
    if sum(len(n) - len("x-amz-meta-") + len(v) for n, v in user) > MAX_USER_META:
        raise bad_request(
            f"x-amz-meta-* headers larger than {MAX_USER_META} bytes", "MetadataTooLarge"
        )
    return tuple(pairs + user)


def set_exact_header(request: Any, name: str, value: str) -> None:
    """Set a header with its name in lower case, as S3 sends x-amz-meta-*: twisted would send
    X-Amz-Meta-Color, and clients give the user the name as it arrives (boto3: "Color")."""
    request.responseHeaders._rawHeaders[name.encode("latin-1")] = [value.encode("latin-1")]


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match/If-None-Match list names `etag` (or is *)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return any(t in ("*", quoted(etag), etag) for t in tags)


def _date(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None  # an unparseable date is ignored, as HTTP says


def check_conditions(call: Call, etag: str, mtime: float, prefix: str = "") -> int | None:
    """412 or 304 when the request's conditional headers (If-Match, If-None-Match,
    If-Modified-Since, If-Unmodified-Since; with `prefix` the x-amz-copy-source-if-* ones)
    say not to serve; None to serve."""
    seconds = int(mtime)
    if_match = call.header(prefix + "if-match")
    if_none = call.header(prefix + "if-none-match")
    if if_match is not None:
        if not etag_matches(if_match, etag):
            return 412
    else:
        since = _date(call.header(prefix + "if-unmodified-since"))
        if since is not None and seconds > since:
            return 412
    if if_none is not None:
        if etag_matches(if_none, etag):
            return 412 if prefix else 304
    else:
        since = _date(call.header(prefix + "if-modified-since"))
        if since is not None and seconds <= since:
            return 412 if prefix else 304
    return None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None to serve everything (no header or
    one HTTP says to ignore); InvalidRange when it cannot be satisfied."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        length = int(last_text)
        if length == 0:
            raise S3Error(416, "InvalidRange", "the requested range is not satisfiable")
        return max(0, size - length), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        raise S3Error(416, "InvalidRange", "the requested range is not satisfiable")
    return first, last


def byte_range(manifest: Manifest, first: int, last: int) -> tuple[Manifest, int]:
    """The manifest of the blocks holding bytes first..last, and how many bytes of its first
    block come before `first`."""
    if manifest.inline is not None:
        data = manifest.inline[first : last + 1]
        return replace(manifest, inline=data, size=len(data)), 0
    blocks, offset, skip = [], 0, 0
    for block in manifest.blocks:
        end = offset + block.size
        if end > first and offset <= last:
            if not blocks:
                skip = first - offset
            blocks.append(block)
        offset = end
    return replace(manifest, blocks=tuple(blocks), size=sum(b.size for b in blocks)), skip


def copy_source(header: str) -> tuple[str, str]:
    """(bucket, key) of an x-amz-copy-source header ("/bucket/key", URL-encoded)."""
    source, _, version = unquote(header).lstrip("/").partition("?")
    if version and version != "versionId=null":
        raise S3Error(501, "NotImplemented", "copying a version (versionId) is not implemented")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise bad_request(f"x-amz-copy-source {header[:200]!r} must be /BUCKET/KEY")
    return bucket, key


class ObjectOperations:
    """The object-level operations of one S3Resource."""

    def __init__(self, s3: S3Resource) -> None:
        self.s3 = s3
        self.c = s3.coordinator

    async def _missing(self, call: Call, bucket: str | None = None) -> S3Error:
        """NoSuchBucket when the bucket is missing, else NoSuchKey."""
        name = bucket or call.bucket
        found = await self.c.lookup(bucket_path(name), self.c.settings.r, above=False)
        if found.directory() is None:
            return S3Error(404, "NoSuchBucket", f"the bucket {name} does not exist")
        return S3Error(404, "NoSuchKey", "the specified key does not exist")

    async def put_object(self, call: Call) -> None:
        path, is_directory = object_path(call.bucket, call.key)
        await self.s3.buckets.require_bucket(call)
        body = call.body
        assert isinstance(body, Verified)
        if is_directory:
            if await body.read(1):
                raise bad_request("a key ending in '/' is a directory: its body must be empty")
            await self.s3.namespace.mkdir(path, parents=True, identity=call.identity)
            etag = EMPTY_MD5
        else:
            meta = request_meta(call)
            await self.c.put_file(
                path, body, identity=call.identity, meta=lambda: (("etag", body.md5 or ""), *meta)
            )
            assert body.md5 is not None
            etag = body.md5
        call.request.setHeader("etag", quoted(etag))
        await self.s3.send(call.request, 200)

    async def get_object(self, call: Call) -> None:
        """GetObject, and HeadObject (the same headers, no body)."""
        path, is_directory = object_path(call.bucket, call.key)
        request = call.request
        if is_directory:
            try:
                stat = await self.c.stat(path, identity=call.identity)
            except NotFound:
                raise await self._missing(call) from None
            if stat["type"] != DIRECTORY:
                raise await self._missing(call)
            request.setHeader("etag", quoted(EMPTY_MD5))
            request.setHeader("last-modified", http_time(stat["mtime"]))
            await self.s3.send(request, 200, b"", "application/x-directory")
            return
        try:
            resolved = await self.c.resolve(path, None, None, call.identity)
        except NotFound:
            raise await self._missing(call) from None
        manifest = resolved.manifest
        etag = manifest_etag(manifest)
        request.setHeader("etag", quoted(etag))
        request.setHeader("last-modified", http_time(manifest.mtime))
        request.setHeader("accept-ranges", "bytes")
        status = check_conditions(call, etag, manifest.mtime)
        if status == 412:
            raise S3Error(412, "PreconditionFailed", "at least one of the preconditions failed")
        if status == 304:
            await self.s3.send(request, 304, b"", "")
            return
        for name, value in manifest.meta:
            if name.startswith("x-amz-meta-"):
                set_exact_header(request, name, value)
            elif name != "etag":
                request.setHeader(name, value)
        if manifest.meta_value("content-type") is None:
            request.setHeader("content-type", DEFAULT_TYPE)
        for name in (
            "content-type",
            "content-language",
            "expires",
            "cache-control",
            "content-disposition",
            "content-encoding",
        ):
            override = call.query.get("response-" + name)
            if override is not None:
                request.setHeader(name, override)
        wanted = parse_range(call.header("range"), manifest.size)
        first, last = wanted if wanted is not None else (0, manifest.size - 1)
        length = last - first + 1 if manifest.size else 0
        if wanted is not None:
            request.setResponseCode(206)
            request.setHeader("content-range", f"bytes {first}-{last}/{manifest.size}")
        request.setHeader("content-length", str(length))
        if request.method == b"HEAD" or length == 0:
            await self.s3.finish_body(request)
            request.finish()
            return
        part, skip = byte_range(manifest, first, last)
        await self._stream(call, part, skip, length)

    async def _stream(self, call: Call, manifest: Manifest, skip: int, length: int) -> None:
        request = call.request
        chunks = self.c.stream(manifest)
        first = await anext(chunks, b"")  # before the headers: a missing block is still a 503
        backpressure = Backpressure()
        request.registerProducer(backpressure, True)
        try:
            chunk = first
            while True:
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[:length]
                length -= len(chunk)
                if chunk:
                    request.write(chunk)
                if length <= 0:
                    break
                await backpressure.ready()
                if backpressure.stopped:
                    return
                chunk = await anext(chunks, b"")
                if not chunk:
                    break
        except Exception as e:
            # The status line is out: any error now must cut the body short (the client sees
            # fewer bytes than Content-Length), never append an error document to it.
            detail = e.detail if isinstance(e, ApiError) else repr(e)
            log.warning("GET %s aborted after the headers: %s", call.resource, detail)
            if request.channel is not None:  # None: the client has gone already
                request.channel.transport.abortConnection()
            return
        finally:
            request.unregisterProducer()
            await chunks.aclose()
        request.finish()

    async def _delete(self, call: Call, bucket: str, key: str) -> None:
        """Delete one key (a missing one is no error, as in S3), then remove the directories
        above it that this leaves empty, up to the bucket."""
        path, is_directory = object_path(bucket, key)
        try:
            if is_directory:
                await self.s3.namespace.rmdir(path, identity=call.identity)
            else:
                await self.c.delete_file(path, identity=call.identity)
        except (NotFound, IsADirectory, NotADirectory, NotEmpty):
            found = await self.c.lookup(bucket_path(bucket), self.c.settings.r, above=False)
            if found.directory() is None:
                raise S3Error(404, "NoSuchBucket", f"the bucket {bucket} does not exist") from None
            return
        await self._prune(parent(path), bucket_path(bucket), call)

    async def _prune(self, directory: str, top: str, call: Call) -> None:
        while directory != top and directory.startswith(top + "/"):
            try:
                entries, _ = await self.c.list_page(directory, None, call.identity, limit=1)
                if entries:
                    return
                await self.s3.namespace.rmdir(directory, identity=call.identity)
            except ApiError:
                return
            directory = parent(directory)

    async def delete_object(self, call: Call) -> None:
        await self._delete(call, call.bucket, call.key)
        await self.s3.send(call.request, 204)

    async def delete_objects(self, call: Call) -> None:
        root = parse(await call.read_small(), "Delete")
        quiet = (text_of(root, "Quiet") or "").strip().lower() == "true"
        keys = [text_of(o, "Key") or "" for o in root.findall("Object")]
        if len(keys) > MAX_DELETE:
            raise S3Error(400, "MalformedXML", f"more than {MAX_DELETE} keys to delete")
        await self.s3.buckets.require_bucket(call)
        results: list[tuple[str, Any]] = []

        async def one(key: str) -> tuple[str, Any]:
            try:
                await self._delete(call, call.bucket, key)
            except S3Error as e:
                return "Error", [("Key", key), ("Code", e.code), ("Message", e.message)]
            except ApiError as e:
                error = from_api_error(e)
                return "Error", [("Key", key), ("Code", error.code), ("Message", error.message)]
            return "Deleted", [("Key", key)]

        for start in range(0, len(keys), DELETE_CONCURRENCY):
            batch = [defer.ensureDeferred(one(k)) for k in keys[start : start + DELETE_CONCURRENCY]]
            results += await defer.gatherResults(batch)
        shown = [r for r in results if not (quiet and r[0] == "Deleted")]
        await self.s3.send(call.request, 200, document("DeleteResult", shown))

    async def copy_object(self, call: Call) -> None:
        header = call.header("x-amz-copy-source") or ""
        source_bucket, source_key = copy_source(header)
        source, source_is_directory = object_path(source_bucket, source_key)
        dest, dest_is_directory = object_path(call.bucket, call.key)
        if source_is_directory or dest_is_directory:
            raise bad_request("CopyObject copies objects, not keys ending in '/'")
        await self.s3.buckets.require_bucket(call)
        try:
            resolved = await self.c.resolve(source, None, None, call.identity)
        except NotFound:
            raise await self._missing(call, source_bucket) from None
        manifest = resolved.manifest
        etag = manifest_etag(manifest)
        if check_conditions(call, etag, manifest.mtime, "x-amz-copy-source-") is not None:
            raise S3Error(412, "PreconditionFailed", "at least one of the preconditions failed")
        directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
        if directive == "COPY":
            if source == dest:
                raise bad_request(
                    "This copy request is illegal because it is trying to copy an object to "
                    "itself without changing the object's metadata",
                    "InvalidRequest",
                )
            kept = tuple(pair for pair in manifest.meta if pair[0] != "etag")
        elif directive == "REPLACE":
            kept = request_meta(call)
        else:
            raise bad_request("x-amz-metadata-directive must be COPY or REPLACE")
        meta = (("etag", etag), *kept)  # the same content keeps its tag, even an opaque one
        await self.c.touch_blocks([b.hash for b in manifest.blocks])
        content = StoredContent(manifest.blocks, manifest.blake3, manifest.size, manifest.inline)
        await self.c.put_file(dest, content, identity=call.identity, meta=meta)
        result = document(
            "CopyObjectResult", [("LastModified", iso_time(self.c.now())), ("ETag", quoted(etag))]
        )
        await self.s3.send(call.request, 200, result)
