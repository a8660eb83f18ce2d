"""How S3 names map onto the namespace: bucket = top-level directory, key ``a/b`` in bucket
``B`` = the file ``/B/a/b``, a key ending in ``/`` = a directory. Keys that cannot be paths
are refused with an S3 error naming why, never renamed. Also the ETag and date forms."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from peer.api.s3.errors import S3Error
from peer.manifest import Manifest
from peer.paths import PathError, normalize

MAX_KEY_BYTES = 1024
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
UPLOADS = "/.s3-uploads"
"""Where multipart uploads keep their parts until completed: not a bucket name (a bucket
cannot start with '.'), owned by the admin, mode 0700."""
_NEW_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BUCKET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


def bucket_path(bucket: str, new: bool = False) -> str:
    """The directory of `bucket`; InvalidBucketName unless it is a top-level name (and, with
    `new`, S3's rules for a bucket to create: 3-63 of a-z 0-9 . -)."""
    pattern = _NEW_BUCKET if new else _BUCKET
    if not pattern.fullmatch(bucket) or ".." in bucket:
        rule = "3-63 characters of a-z, 0-9, '.' and '-'" if new else "a top-level name"
        raise S3Error(400, "InvalidBucketName", f"bucket name {bucket[:80]!r} must be {rule}")
    return "/" + bucket


def object_path(bucket: str, key: str) -> tuple[str, bool]:
    """(path, is a directory) of `key` in `bucket`; InvalidArgument naming why a key cannot
    be a path (empty names, '.', '..', control characters, too long)."""
    base = bucket_path(bucket)
    if not key:
        raise S3Error(400, "InvalidArgument", "empty object key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error(400, "KeyTooLongError", f"object key longer than {MAX_KEY_BYTES} bytes")
    directory = key.endswith("/")
    body = key[:-1] if directory else key
    try:
        path = normalize(base + "/" + body)
    except PathError as e:
        raise S3Error(
            400, "InvalidArgument", f"object key {key[:200]!r} cannot be a quorumfs path: {e}"
        ) from None
    if path != base + "/" + body:
        raise S3Error(
            400,
            "InvalidArgument",
            f"object key {key[:200]!r} cannot be a path: empty name at its end",
        )
    return path, directory


def quoted(etag: str) -> str:
    return f'"{etag}"'


def manifest_etag(manifest: Manifest) -> str:
    """The ETag of a stored file: the MD5 (or md5-of-md5s-N) the S3 API stored with it, or,
    for a file written through the qfs API, an opaque tag with a '-' (clients take tags with
    a dash as not being an MD5) that the file's listing entry gives too."""
    return manifest.meta_value("etag") or opaque_etag(manifest.size, manifest.mtime)


def entry_etag(entry: dict[str, Any]) -> str:
    """The ETag of a listing entry (see manifest_etag)."""
    return entry.get("etag") or opaque_etag(entry["size"], entry["mtime"])


def opaque_etag(size: int, mtime: float) -> str:
    return hashlib.md5(f"{size}:{mtime!r}".encode()).hexdigest() + "-1"


def iso_time(timestamp: float) -> str:
    """S3's timestamp form in XML: 2026-12-01T09:30:00.000Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_time(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)
