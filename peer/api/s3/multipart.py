"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts and
ListMultipartUploads.

An upload lives in the directory ``/.s3-uploads/<upload id>`` (admin-owned, mode 0700, so
only the admin sees it through the qfs API): a small ``info`` file (bucket, key, initiator,
metadata) and one file per part, ``part-00001``..., each written like any file (its blocks
replicated with W acks; the part's MD5 stored with it). Complete writes one manifest at the
object's path listing every part's blocks in order (no block is copied; garbage collection
spares them since the parts' manifests reference them until then), computing the whole
file's BLAKE3 hash by reading the blocks back (hashed in a worker thread); a long Complete
keeps the connection alive with whitespace after a 200, as S3 does, and reports a late failure
as an Error document in that body. The ETag is S3's: MD5 of the parts' binary MD5s, a dash,
the number of parts.

An upload neither completed nor aborted within the expiry (``--s3-upload-expiry``, default 7
days, counted from its creation) is gone for clients at once (NoSuchUpload, not listed) and
its parts are removed by `expire` once it is EXPIRY_MARGIN older still, so a Complete that
began just before the expiry never loses its parts under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import blake3
from twisted.internet import defer

from peer.api.s3.errors import S3Error, access_denied, bad_request, from_api_error
from peer.api.s3.names import UPLOADS, iso_time, object_path, quoted
from peer.api.s3.objects import byte_range, copy_source, parse_range, request_meta
from peer.api.s3.payload import DIGEST_BACKLOG, Digests, Verified
from peer.api.s3.xml import document, error_document, parse, text_of
from peer.body import FileBody
from peer.config import S3_UPLOAD_EXPIRY
from peer.coordinator import StoredContent
from peer.errors import AlreadyExists, ApiError, NotFound
from peer.lookup import decode_manifests
from peer.manifest import ADMIN, DIRECTORY, Block, Manifest, manifest_key, merge_versions
from peer.permissions import ADMIN_IDENTITY, EXECUTE, WRITE, require, require_traverse

if TYPE_CHECKING:
    from peer.api.s3.server import Call, S3Resource

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
KEEPALIVE = 5.0  # seconds between whitespace bytes of a long CompleteMultipartUpload
READ_BATCH = 256
EXPIRY_MARGIN = 3600.0  # at most; never more than the expiry itself
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def upload_dir(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}"


def part_name(number: int) -> str:
    return f"part-{number:05d}"


class ChunkBody:
    """A BodyReader over `length` bytes of an async stream of chunks, after `skip` bytes."""

    def __init__(self, chunks: AsyncIterator[bytes], skip: int, length: int) -> None:
        self._chunks = chunks
        self._skip = skip
        self._left = length
        self._buffer = b""

    async def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._left > 0:
            chunk = await anext(self._chunks, b"")
            if not chunk:
                break
            if self._skip:
                cut = min(self._skip, len(chunk))
                chunk, self._skip = chunk[cut:], self._skip - cut
            chunk = chunk[: self._left]
            self._left -= len(chunk)
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class MultipartOperations:
    """The multipart-upload operations of one S3Resource."""

    def __init__(self, s3: S3Resource, expiry: float = S3_UPLOAD_EXPIRY) -> None:
        self.s3 = s3
        self.c = s3.coordinator
        self.expiry = expiry
        self._uploads_checked = False

    async def _uploads_dir(self) -> None:
        """Create /.s3-uploads (admin, 0700) on first use. One that a user made first (the
        root is world-writable) is refused: its owner could read every upload's parts."""
        if self._uploads_checked:
            return
        with contextlib.suppress(AlreadyExists):
            await self.s3.namespace.mkdir(UPLOADS)
        stat = await self.c.stat(UPLOADS)
        if stat["type"] != DIRECTORY or stat["owner"] != ADMIN:
            raise S3Error(
                500,
                "InternalError",
                f"{UPLOADS} belongs to {stat['owner']}, not the admin: multipart uploads are "
                "off until an admin removes it",
            )
        if stat["mode"] != "0700":
            await self.s3.namespace.set_attrs(UPLOADS, mode=0o700)
        self._uploads_checked = True  # the admin's now, in a sticky root: nobody else's again

    async def _read_file(self, path: str) -> bytes:
        resolved = await self.c.resolve(path, None, None, ADMIN_IDENTITY)
        return b"".join([chunk async for chunk in self.c.stream(resolved.manifest)])

    async def _upload(self, call: Call) -> dict[str, Any]:
        """The upload named by ?uploadId=, checked to be this bucket's and key's and the
        caller's; NoSuchUpload otherwise."""
        upload_id = call.query.get("uploadId", "")
        missing = S3Error(
            404, "NoSuchUpload", f"no upload {upload_id[:40]!r}: aborted, completed or never made"
        )
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise missing
        try:
            info = json.loads(await self._read_file(upload_dir(upload_id) + "/info"))
        except NotFound:
            raise missing from None
        if info["bucket"] != call.bucket or info["key"] != call.key:
            raise missing
        if self._expired(info["initiated"]):
            raise S3Error(
                404, "NoSuchUpload", f"upload {upload_id} expired: it was started too long ago"
            )
        if info["user"] != call.identity.user and not call.identity.admin:
            raise access_denied("this upload was started by another user")
        info["id"] = upload_id
        return info

    async def create(self, call: Call) -> None:
        path, is_directory = object_path(call.bucket, call.key)
        if is_directory:
            raise bad_request("a key ending in '/' is a directory, not an object to upload")
        await self.s3.buckets.require_bucket(call)
        await self._require_writable(call, path)
        await self._uploads_dir()
        upload_id = secrets.token_hex(16)
        info = {
            "bucket": call.bucket,
            "key": call.key,
            "user": call.identity.user,
            "meta": [list(pair) for pair in request_meta(call)],
            "initiated": self.c.now(),
        }
        body = FileBody(io.BytesIO(json.dumps(info).encode()))
        await self.c.put_file(upload_dir(upload_id) + "/info", body, mode=0o600)
        result = document(
            "InitiateMultipartUploadResult",
            [("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload_id)],
        )
        await self.s3.send(call.request, 200, result)

    async def _require_writable(self, call: Call, path: str) -> None:
        """AccessDenied now, not after every part is uploaded, when the caller may not write
        `path` (w on the file, or w and x on the directory it would be created in)."""
        identity = call.identity
        found = await self.c.lookup(path, self.c.settings.r, above=not identity.admin)
        require_traverse(identity, found.traversed())
        versions = decode_manifests(path, found.manifest)
        if versions:
            require(identity, merge_versions(versions).attrs_from.attrs, WRITE, path)
        else:
            container, attrs = found.container()
            require(identity, attrs, WRITE | EXECUTE, container)

    def _part_number(self, call: Call) -> int:
        text = call.query.get("partNumber", "")
        if not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
            raise bad_request(f"partNumber must be 1-{MAX_PARTS}")
        return int(text)

    async def upload_part(self, call: Call) -> None:
        """UploadPart, or UploadPartCopy when x-amz-copy-source names the bytes."""
        number = self._part_number(call)
        info = await self._upload(call)
        source = call.header("x-amz-copy-source")
        body = call.body
        if source is not None:
            copied = await self._copy_source_body(call, source)
            body = Verified(copied, run_in_thread=self.s3.run_in_thread)
        assert isinstance(body, Verified)
        path = upload_dir(info["id"]) + "/" + part_name(number)
        await self.c.put_file(path, body, mode=0o600, meta=lambda: (("etag", body.md5 or ""),))
        assert body.md5 is not None
        if source is None:
            call.request.setHeader("etag", quoted(body.md5))
            await self.s3.send(call.request, 200)
            return
        result = document(
            "CopyPartResult",
            [("LastModified", iso_time(self.c.now())), ("ETag", quoted(body.md5))],
        )
        await self.s3.send(call.request, 200, result)

    async def _copy_source_body(self, call: Call, header: str) -> ChunkBody:
        bucket, key = copy_source(header)
        path, _ = object_path(bucket, key)
        try:
            resolved = await self.c.resolve(path, None, None, call.identity)
        except NotFound:
            raise S3Error(
                404, "NoSuchKey", f"the copy source {bucket}/{key} does not exist"
            ) from None
        manifest = resolved.manifest
        wanted = call.header("x-amz-copy-source-range")
        span = parse_range(wanted, manifest.size) if wanted is not None else None
        if wanted is not None and span is None:
            raise bad_request("x-amz-copy-source-range must be bytes=FIRST-LAST", "InvalidRange")
        first, last = span if span is not None else (0, manifest.size - 1)
        part, skip = byte_range(manifest, first, last)
        return ChunkBody(self.c.stream(part), skip, max(0, last - first + 1))

    async def _parts(self, upload_id: str) -> dict[int, dict[str, Any]]:
        """Part number -> listing entry of every part uploaded so far."""
        parts: dict[int, dict[str, Any]] = {}
        async for entries in self.c.pages(upload_dir(upload_id), limit=1000):
            for entry in entries:
                name = entry["name"]
                if name.startswith("part-") and name[5:].isdigit():
                    parts[int(name[5:])] = entry
        return parts

    async def list_parts(self, call: Call) -> None:
        info = await self._upload(call)
        marker_text = call.query.get("part-number-marker", "0")
        max_text = call.query.get("max-parts", "1000")
        if not marker_text.isdigit() or not max_text.isdigit():
            raise bad_request("part-number-marker and max-parts must be numbers")
        marker, max_parts = int(marker_text), min(int(max_text), 1000)
        parts = sorted((n, e) for n, e in (await self._parts(info["id"])).items() if n > marker)
        shown, truncated = parts[:max_parts], len(parts) > max_parts
        user = [("ID", info["user"]), ("DisplayName", info["user"])]
        fields: list[tuple[str, Any]] = [
            ("Bucket", call.bucket),
            ("Key", call.key),
            ("UploadId", info["id"]),
            ("Initiator", user),
            ("Owner", user),
            ("StorageClass", "STANDARD"),
            ("PartNumberMarker", marker),
            ("NextPartNumberMarker", shown[-1][0] if shown else marker),
            ("MaxParts", max_parts),
            ("IsTruncated", truncated),
        ]
        for number, entry in shown:
            fields.append(
                (
                    "Part",
                    [
                        ("PartNumber", number),
                        ("LastModified", iso_time(entry["mtime"])),
                        ("ETag", quoted(entry.get("etag", ""))),
                        ("Size", entry["size"]),
                    ],
                )
            )
        await self.s3.send(call.request, 200, document("ListPartsResult", fields))

    async def abort(self, call: Call) -> None:
        info = await self._upload(call)
        await self.s3.namespace.rmdir(upload_dir(info["id"]), recursive=True)
        await self.s3.send(call.request, 204)

    async def list_uploads(self, call: Call) -> None:
        await self.s3.buckets.require_bucket(call)
        prefix = call.query.get("prefix", "")
        key_marker = call.query.get("key-marker", "")
        found: list[dict[str, Any]] = []
        async for entries in self._upload_pages():
            infos = await defer.gatherResults(
                [defer.ensureDeferred(self._info_or_none(e["name"])) for e in entries]
            )
            for info in infos:
                if (
                    info is not None
                    and not self._expired(info["initiated"])
                    and info["bucket"] == call.bucket
                    and info["key"].startswith(prefix)
                    and info["key"] > key_marker
                    and (call.identity.admin or info["user"] == call.identity.user)
                ):
                    found.append(info)
        found.sort(key=lambda i: (i["key"], i["initiated"]))
        fields: list[tuple[str, Any]] = [
            ("Bucket", call.bucket),
            ("KeyMarker", key_marker),
            ("UploadIdMarker", ""),
            ("Prefix", prefix),
            ("MaxUploads", 1000),
            ("IsTruncated", False),
        ]
        for info in found[:1000]:
            user = [("ID", info["user"]), ("DisplayName", info["user"])]
            fields.append(
                (
                    "Upload",
                    [
                        ("Key", info["key"]),
                        ("UploadId", info["id"]),
                        ("Initiator", user),
                        ("Owner", user),
                        ("StorageClass", "STANDARD"),
                        ("Initiated", iso_time(info["initiated"])),
                    ],
                )
            )
        await self.s3.send(call.request, 200, document("ListMultipartUploadsResult", fields))

    @property
    def sweep_interval(self) -> float:
        """Seconds between `expire` runs: a quarter of the expiry, between 1 s and an hour."""
        return max(1.0, min(self.expiry / 4, 3600.0))

    def _expired(self, initiated: float, margin: float = 0.0) -> bool:
        return self.c.now() - initiated > self.expiry + margin

    async def expire(self) -> int:
        """Remove the parts of every upload expired more than the margin ago; returns how many
        uploads went. Any peer may run it, several at once: a removal is idempotent."""
        margin = min(self.expiry, EXPIRY_MARGIN)
        removed = 0
        async for entries in self._upload_pages():
            for entry in entries:
                if not _UPLOAD_ID.fullmatch(entry["name"]):
                    continue
                info = await self._info_or_none(entry["name"])
                started = entry["mtime"] if info is None else info["initiated"]
                if self._expired(started, margin):
                    with contextlib.suppress(NotFound):
                        await self.s3.namespace.rmdir(upload_dir(entry["name"]), recursive=True)
                    log.info("multipart upload %s expired: its parts are removed", entry["name"])
                    removed += 1
        return removed

    async def _upload_pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The entries of /.s3-uploads a page at a time; none before the first upload made
        it (or once a page finds it gone)."""
        try:
            async for entries in self.c.pages(UPLOADS, limit=READ_BATCH):
                yield entries
        except NotFound:
            return

    async def _info_or_none(self, upload_id: str) -> dict[str, Any] | None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        try:
            info = json.loads(await self._read_file(upload_dir(upload_id) + "/info"))
        except (NotFound, ValueError):
            return None
        info["id"] = upload_id
        return info

    async def _wanted(self, call: Call) -> list[tuple[int, str]]:
        root = parse(await call.read_small(), "CompleteMultipartUpload")
        wanted = []
        for part in root.findall("Part"):
            number = (text_of(part, "PartNumber") or "").strip()
            etag = (text_of(part, "ETag") or "").strip().strip('"')
            if not number.isdigit():
                raise S3Error(400, "MalformedXML", "every Part needs a PartNumber")
            wanted.append((int(number), etag))
        if not wanted:
            raise S3Error(400, "MalformedXML", "CompleteMultipartUpload lists no parts")
        if len(wanted) > MAX_PARTS:
            raise S3Error(400, "MalformedXML", f"more than {MAX_PARTS} parts")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "the parts must be listed in ascending order")
        return wanted

    async def _manifests(self, paths: list[str]) -> list[Manifest]:
        manifests = []
        for start in range(0, len(paths), READ_BATCH):
            batch = paths[start : start + READ_BATCH]
            groups = [(p, [manifest_key(p)]) for p in batch]
            found = await self.c.read_groups(groups, self.c.settings.r, "read parts")
            for path, (siblings,) in zip(batch, found, strict=True):
                versions = decode_manifests(path, siblings)
                if not versions:
                    raise S3Error(400, "InvalidPart", f"{path.rsplit('/', 1)[1]} is gone")
                manifests.append(merge_versions(versions).heads[0][1])
        return manifests

    async def complete(self, call: Call) -> None:
        info = await self._upload(call)
        path, _ = object_path(call.bucket, call.key)
        wanted = await self._wanted(call)
        parts = await self._parts(info["id"])
        for index, (number, etag) in enumerate(wanted):
            entry = parts.get(number)
            if entry is None or entry.get("etag") != etag:
                raise S3Error(
                    400, "InvalidPart", f"part {number} was not uploaded or its ETag differs"
                )
            if index < len(wanted) - 1 and entry["size"] < MIN_PART:
                raise S3Error(
                    400, "EntityTooSmall", f"part {number} is smaller than {MIN_PART} bytes"
                )
        directory = upload_dir(info["id"])
        manifests = await self._manifests([f"{directory}/{part_name(n)}" for n, _ in wanted])
        request = call.request
        await self.s3.finish_body(request)
        request.setResponseCode(200)
        request.setHeader("content-type", "application/xml")
        request.write(XML_DECLARATION)
        try:
            blocks: list[Block] = []
            for manifest in manifests:
                if manifest.inline is not None:
                    block_hash = blake3.blake3(manifest.inline).hexdigest()
                    await self.c.store_block(block_hash, manifest.inline, self.c.settings.w)
                    blocks.append(Block(block_hash, len(manifest.inline)))
                else:
                    blocks.extend(manifest.blocks)
            size = sum(b.size for b in blocks)
            whole = Manifest(size, 0.0, 0o600, "", tuple(blocks))
            hasher = blake3.blake3()
            digests = Digests([hasher], self.s3.run_in_thread)  # off the reactor
            last = self.c.now()
            async for chunk in self.c.stream(whole):
                digests.feed(chunk)
                await digests.drained(DIGEST_BACKLOG)
                if self.c.now() - last > KEEPALIVE:
                    last = self.c.now()
                    request.write(b" ")
            await digests.drained()
            md5s = b"".join(bytes.fromhex(etag) for _, etag in wanted)
            etag = f"{hashlib.md5(md5s).hexdigest()}-{len(wanted)}"
            meta = (("etag", etag), *(tuple(pair) for pair in info["meta"]))
            content = StoredContent(tuple(blocks), hasher.hexdigest(), size)
            await self.c.put_file(path, content, identity=call.identity, meta=meta)
            await self.s3.namespace.rmdir(directory, recursive=True)
        except (S3Error, ApiError) as e:
            error = e if isinstance(e, S3Error) else from_api_error(e)
            body = error_document(error.code, error.message, call.resource, call.request_id)
            request.write(body[len(XML_DECLARATION) :])
            request.finish()
            return
        result = document(
            "CompleteMultipartUploadResult",
            [
                ("Location", f"/{call.bucket}/{call.key}"),
                ("Bucket", call.bucket),
                ("Key", call.key),
                ("ETag", quoted(etag)),
            ],
        )
        request.write(result[len(XML_DECLARATION) :])
        request.finish()
