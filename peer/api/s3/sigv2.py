"""AWS Signature Version 2 for presigned URLs only (``?AWSAccessKeyId=&Expires=&Signature=``),
as pure functions: boto3's generate_presigned_url and ``s3cmd signurl`` make these by default.
Header-signed requests must use SigV4 (`peer.api.s3.sigv4`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from peer.api.s3.errors import S3Error, access_denied

SUBRESOURCES = frozenset(
    {
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)
MAX_LIFETIME = 7 * 24 * 3600


@dataclass(frozen=True)
class PresignedV2:
    access_key: str
    expires: int
    signature: str


def parse_presigned(query: Mapping[str, str]) -> PresignedV2:
    """The AWSAccessKeyId, Expires and Signature of a V2 presigned URL."""
    missing = [n for n in ("AWSAccessKeyId", "Expires", "Signature") if n not in query]
    if missing:
        raise access_denied(f"presigned URL lacks {', '.join(missing)}")
    expires = query["Expires"]
    if not expires.isdigit() or len(expires) > 12:
        raise access_denied("Expires must be a time in seconds since the epoch")
    return PresignedV2(query["AWSAccessKeyId"], int(expires), query["Signature"])


def check_time(presigned: PresignedV2, now: float) -> None:
    if now > presigned.expires:
        raise access_denied("Request has expired")
    if presigned.expires > now + MAX_LIFETIME:
        raise access_denied(f"a presigned URL may live at most {MAX_LIFETIME} seconds")


def string_to_sign(
    method: str,
    resource_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, list[str]],
    expires: int,
) -> str:
    amz = sorted(
        (name, ",".join(v.strip() for v in values))
        for name, values in headers.items()
        if name.startswith("x-amz-")
    )
    sub = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    resource = resource_path
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    first = headers.get("content-md5", [""])[-1]
    kind = headers.get("content-type", [""])[-1]
    return "\n".join([method, first, kind, str(expires), *(f"{n}:{v}" for n, v in amz), resource])


def verify(
    presigned: PresignedV2,
    secret: str,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, list[str]],
) -> None:
    """SignatureDoesNotMatch unless the URL was signed with `secret` (the path as sent, or
    S3-encoded from its decoded form)."""
    for path in {raw_path, quote(unquote(raw_path), safe="/-_.~")}:
        text = string_to_sign(method, path, query, headers, presigned.expires)
        digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
        if hmac.compare_digest(base64.b64encode(digest).decode(), presigned.signature):
            return
    raise S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided",
    )
