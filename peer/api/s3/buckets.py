"""Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation
and ListObjects (V1 and V2). A bucket is a top-level directory."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from peer.api.s3.errors import S3Error, bad_request, from_api_error
from peer.api.s3.listing import Item, list_keys
from peer.api.s3.names import EMPTY_MD5, bucket_path, entry_etag, iso_time, quoted
from peer.api.s3.xml import document, parse
from peer.errors import AlreadyExists, ApiError
from peer.manifest import DIRECTORY
from peer.paths import ROOT

if TYPE_CHECKING:
    from peer.api.s3.server import Call, S3Resource

PAGE = 1000  # entries per page of the core's directory listing
MAX_KEYS = 1000
BUCKET_CACHE = 2.0
BUCKET_CACHE_LIMIT = 10_000


class BucketOperations:
    """The bucket-level operations of one S3Resource."""

    def __init__(self, s3: S3Resource) -> None:
        self.s3 = s3
        self.c = s3.coordinator
        self._seen: dict[str, float] = {}

    async def require_bucket(self, call: Call) -> str:
        """The bucket's directory; NoSuchBucket when there is none. A bucket seen within
        BUCKET_CACHE seconds is taken to exist (puts of small objects skip a read): a write
        racing with the bucket's removal recreates it, as a qfs put recreates directories."""
        path = bucket_path(call.bucket)
        now = self.s3.ticks()
        if now - self._seen.get(path, -BUCKET_CACHE) < BUCKET_CACHE:
            return path
        found = await self.c.lookup(path, self.c.settings.r, above=False)
        if found.directory() is None:
            self._seen.pop(path, None)
            raise S3Error(404, "NoSuchBucket", f"the bucket {call.bucket} does not exist")
        if len(self._seen) >= BUCKET_CACHE_LIMIT:
            self._seen.clear()
        self._seen[path] = now
        return path

    async def list_buckets(self, call: Call) -> None:
        buckets = []
        async for entries in self.c.pages(ROOT, None, call.identity, limit=PAGE):
            for entry in entries:
                if entry["type"] == DIRECTORY and not entry["name"].startswith("."):
                    buckets.append(
                        (
                            "Bucket",
                            [("Name", entry["name"]), ("CreationDate", iso_time(entry["mtime"]))],
                        )
                    )
        owner = [("ID", call.identity.user), ("DisplayName", call.identity.user)]
        body = document("ListAllMyBucketsResult", [("Owner", owner), ("Buckets", buckets)])
        await self.s3.send(call.request, 200, body)

    async def create_bucket(self, call: Call) -> None:
        path = bucket_path(call.bucket, new=True)
        config = await call.read_small()
        if config.strip():
            parse(config, "CreateBucketConfiguration")
        try:
            await self.s3.namespace.mkdir(path, identity=call.identity)
        except AlreadyExists:
            stat = await self.c.stat(path, identity=call.identity)
            if stat["type"] == DIRECTORY and stat["owner"] == call.identity.user:
                raise S3Error(
                    409, "BucketAlreadyOwnedByYou", f"you already own the bucket {call.bucket}"
                ) from None
            raise S3Error(
                409, "BucketAlreadyExists", f"the bucket name {call.bucket} is taken"
            ) from None
        call.request.setHeader("location", path)
        await self.s3.send(call.request, 200)

    async def delete_bucket(self, call: Call) -> None:
        path = bucket_path(call.bucket)
        self._seen.pop(path, None)
        try:
            await self.s3.namespace.rmdir(path, identity=call.identity)
        except ApiError as e:
            raise from_api_error(e, "NoSuchBucket") from None
        await self.s3.send(call.request, 204)

    async def head_bucket(self, call: Call) -> None:
        try:
            await self.c.list_page(bucket_path(call.bucket), None, call.identity, limit=1)
        except ApiError as e:
            raise from_api_error(e, "NoSuchBucket") from None
        call.request.setHeader("x-amz-bucket-region", "us-east-1")
        await self.s3.send(call.request, 200)

    async def get_location(self, call: Call) -> None:
        await self.require_bucket(call)
        await self.s3.send(call.request, 200, document("LocationConstraint", []))

    async def list_objects(self, call: Call) -> None:
        """ListObjects V1 (marker) or, with list-type=2, V2 (continuation-token, start-after)."""
        q = call.query
        v2 = q.get("list-type") == "2"
        if "list-type" in q and not v2:
            raise bad_request(f"list-type={q['list-type']!r} must be 2")
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter") or None
        encoding = q.get("encoding-type")
        if encoding not in (None, "url"):
            raise bad_request("encoding-type must be url")
        max_text = q.get("max-keys", str(MAX_KEYS))
        if not max_text.isdigit():
            raise bad_request(f"max-keys={max_text[:20]!r} is not a number")
        max_keys = min(int(max_text), MAX_KEYS)
        if v2:
            token = q.get("continuation-token")
            after = _decode_token(token) if token is not None else q.get("start-after") or None
        else:
            after = q.get("marker") or None
        path = await self.require_bucket(call)
        identity = call.identity

        async def fetch(
            directory: str, after_name: str | None
        ) -> tuple[list[dict[str, Any]], str | None]:
            return await self.c.list_page(directory, None, identity, after=after_name, limit=PAGE)

        items: list[Item] = []
        truncated = False
        if max_keys > 0:
            async for item in list_keys(fetch, path, prefix, delimiter, after):
                if len(items) == max_keys:
                    truncated = True
                    break
                items.append(item)
        enc = (lambda text: quote(text, safe="/")) if encoding == "url" else (lambda text: text)
        contents: list[tuple[str, Any]] = []
        for item in items:
            if item.entry is None:
                contents.append(("CommonPrefixes", [("Prefix", enc(item.key))]))
                continue
            entry = item.entry
            fields: list[tuple[str, Any]] = [
                ("Key", enc(item.key)),
                ("LastModified", iso_time(entry["mtime"])),
                ("ETag", quoted(EMPTY_MD5 if entry["type"] == DIRECTORY else entry_etag(entry))),
                ("Size", entry["size"]),
                ("StorageClass", "STANDARD"),
            ]
            if not v2 or q.get("fetch-owner") == "true":
                fields.insert(
                    4, ("Owner", [("ID", entry["owner"]), ("DisplayName", entry["owner"])])
                )
            contents.append(("Contents", fields))
        last = items[-1].key if items else None
        head: list[tuple[str, Any]] = [
            ("Name", call.bucket),
            ("Prefix", enc(prefix)),
        ]
        if v2:
            if "continuation-token" in q:
                head.append(("ContinuationToken", q["continuation-token"]))
            if "start-after" in q:
                head.append(("StartAfter", enc(q["start-after"])))
            head.append(("KeyCount", len(items)))
            if truncated and last is not None:
                head.append(("NextContinuationToken", _encode_token(last)))
        else:
            head.append(("Marker", enc(q.get("marker", ""))))
            if truncated and last is not None and delimiter is not None:
                head.append(("NextMarker", enc(last)))
        head.append(("MaxKeys", max_keys))
        if delimiter is not None:
            head.append(("Delimiter", enc(delimiter)))
        if encoding is not None:
            head.append(("EncodingType", "url"))
        head.append(("IsTruncated", truncated))
        await self.s3.send(call.request, 200, document("ListBucketResult", head + contents))


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request("the continuation token is not one this server gave") from None
