"""AWS Signature Version 4 as pure functions: parse what a request carries, rebuild the
canonical request and compare signatures in constant time.

Three forms are checked: the ``Authorization`` header, presigned URLs (the same fields in the
query string, with an expiry) and the per-chunk signatures of ``aws-chunked`` bodies
(`ChunkSigner`). Every input is bounded and validated before any hashing; a malformed
request gets an S3 error saying what is wrong. Time is an argument (`now`, in seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote, unquote

from peer.api.s3.errors import S3Error, access_denied, bad_request

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 15 * 60  # seconds a header-signed request's date may be off, as S3 allows
MAX_EXPIRES = 7 * 24 * 3600  # the longest presigned URL S3 accepts
MAX_AUTH = 4096
_CREDENTIAL = re.compile(
    r"([A-Za-z0-9]{1,128})/(\d{8})/([a-z0-9-]{1,32})/([a-z0-9]{1,16})/aws4_request"
)
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_SIGNED_HEADERS = re.compile(r"[a-z0-9-]+(;[a-z0-9-]+)*")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SPACES = re.compile(r" +")


@dataclass(frozen=True)
class Credential:
    """What a signature claims: key id, date (YYYYMMDD), region and service."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class SignedRequest:
    """The signature fields of one request, header or presigned."""

    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    presigned: bool
    expires: int | None = None


def _credential(text: str) -> Credential:
    match = _CREDENTIAL.fullmatch(text)
    if match is None:
        raise bad_request(
            f"malformed Credential {text[:200]!r}: expected KEY/YYYYMMDD/REGION/s3/aws4_request",
            "AuthorizationHeaderMalformed",
        )
    key, date, region, service = match.groups()
    if service != "s3":
        raise bad_request(
            f"credential scope is for {service!r}, not s3", "AuthorizationHeaderMalformed"
        )
    return Credential(key, date, region, service)


def _signed_headers(text: str) -> tuple[str, ...]:
    if len(text) > MAX_AUTH or not _SIGNED_HEADERS.fullmatch(text):
        raise bad_request("malformed SignedHeaders", "AuthorizationHeaderMalformed")
    names = tuple(text.split(";"))
    if "host" not in names:
        raise bad_request("SignedHeaders must include host", "AuthorizationHeaderMalformed")
    return names


def _signature(text: str) -> str:
    if not _HEX_SIGNATURE.fullmatch(text):
        raise bad_request(
            "Signature must be 64 lowercase hex digits", "AuthorizationHeaderMalformed"
        )
    return text


def parse_header(authorization: str, amz_date: str | None) -> SignedRequest:
    """The fields of ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
    Signature=...`` (with the request's X-Amz-Date or Date)."""
    if len(authorization) > MAX_AUTH:
        raise bad_request(
            f"Authorization header longer than {MAX_AUTH}", "AuthorizationHeaderMalformed"
        )
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise bad_request(
            f"unsupported authorization {algorithm[:40]!r}: only AWS Signature Version 4 "
            f"({ALGORITHM}) is accepted",
            "InvalidRequest",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise bad_request(
                f"malformed Authorization field {part[:60]!r}", "AuthorizationHeaderMalformed"
            )
        fields[name] = value
    missing = {"Credential", "SignedHeaders", "Signature"} - set(fields)
    if missing:
        raise bad_request(
            f"Authorization header lacks {', '.join(sorted(missing))}",
            "AuthorizationHeaderMalformed",
        )
    if amz_date is None or not _AMZ_DATE.fullmatch(amz_date):
        raise access_denied("missing or malformed X-Amz-Date header (YYYYMMDDTHHMMSSZ)")
    return SignedRequest(
        _credential(fields["Credential"]),
        _signed_headers(fields["SignedHeaders"]),
        _signature(fields["Signature"]),
        amz_date,
        presigned=False,
    )


def parse_presigned(query: Mapping[str, str]) -> SignedRequest:
    """The X-Amz-* fields of a presigned URL's query."""
    missing = [
        name
        for name in (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if name not in query
    ]
    if missing:
        raise access_denied(f"presigned URL lacks {', '.join(missing)}")
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise bad_request(
            f"X-Amz-Algorithm must be {ALGORITHM}", "AuthorizationQueryParametersError"
        )
    expires = query["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_EXPIRES:
        raise bad_request(
            f"X-Amz-Expires must be 1-{MAX_EXPIRES} seconds", "AuthorizationQueryParametersError"
        )
    amz_date = query["X-Amz-Date"]
    if not _AMZ_DATE.fullmatch(amz_date):
        raise bad_request("malformed X-Amz-Date", "AuthorizationQueryParametersError")
    return SignedRequest(
        _credential(query["X-Amz-Credential"]),
        _signed_headers(query["X-Amz-SignedHeaders"]),
        _signature(query["X-Amz-Signature"]),
        amz_date,
        presigned=True,
        expires=int(expires),
    )


def timestamp(amz_date: str) -> int:
    """Seconds since the epoch of a YYYYMMDDTHHMMSSZ date."""
    if _AMZ_DATE.fullmatch(amz_date):
        fields = (amz_date[0:4], amz_date[4:6], amz_date[6:8], amz_date[9:11], amz_date[11:13])
        try:  # datetime checks the ranges; strptime cost ~5x as much per request
            at = datetime(*map(int, fields), int(amz_date[13:15]), tzinfo=UTC)
        except ValueError:
            pass
        else:
            return int(at.timestamp())
    raise access_denied(f"X-Amz-Date {amz_date!r} is not a date")


def check_time(signed: SignedRequest, now: float) -> None:
    """AccessDenied for an expired presigned URL; RequestTimeTooSkewed for a header-signed
    request whose date is more than MAX_SKEW away from `now`."""
    at = timestamp(signed.amz_date)
    if signed.credential.date != signed.amz_date[:8]:
        raise access_denied("the credential's date is not the request's date")
    if signed.presigned:
        assert signed.expires is not None
        if now > at + signed.expires:
            raise access_denied("Request has expired")
        if at > now + MAX_SKEW:
            raise access_denied("the presigned URL is dated in the future")
    elif abs(now - at) > MAX_SKEW:
        raise S3Error(
            403,
            "RequestTimeTooSkewed",
            "the difference between the request time and now is too large",
        )


def uri_encode(text: str, slash: bool = True) -> str:
    """S3's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ (and / with `slash`) as %XX."""
    return quote(text, safe="/-_.~" if slash else "-_.~")


def canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    """The canonical query string of decoded (name, value) pairs (X-Amz-Signature left out)."""
    encoded = sorted(
        (uri_encode(k, slash=False), uri_encode(v, slash=False))
        for k, v in pairs
        if k != "X-Amz-Signature"
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    method: str,
    canonical_uri: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, list[str]],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The canonical request SigV4 hashes; `headers` maps lower-case names to their values."""
    lines = []
    for name in signed_headers:
        values = headers.get(name)
        if values is None:
            raise access_denied(f"signed header {name!r} is not in the request")
        lines.append(name + ":" + ",".join(_SPACES.sub(" ", v.strip()) for v in values))
    return "\n".join(
        [
            method,
            canonical_uri,
            canonical_query(query),
            *lines,
            "",
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def signing_key(secret: str, credential: Credential) -> bytes:
    """The key derived from the secret for one day, region and service."""
    return _signing_key(secret, credential.date, credential.region, credential.service)


@lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Four HMACs, the same for every request of a key in a day: derived once (a secret here
    is as safe as in the key cache it came from)."""
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def sign(key: bytes, text: str) -> str:
    """The hex HMAC-SHA256 of `text` under `key`."""
    return hmac.digest(key, text.encode(), "sha256").hex()


def canonical_uris(raw_path: str) -> list[str]:
    """Canonical URIs a client may have signed for this raw request path: S3's rule (the
    decoded path, URI-encoded once), then the path exactly as sent (clients that sign the
    encoding they send)."""
    spec = uri_encode(unquote(raw_path))
    return [spec] if spec == raw_path else [spec, raw_path]


def verify(
    signed: SignedRequest,
    secret: str,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, list[str]],
    payload_hash: str,
) -> bytes:
    """Check the signature; SignatureDoesNotMatch when it is wrong. Returns the signing key
    (aws-chunked bodies sign each chunk with it)."""
    key = signing_key(secret, signed.credential)
    for uri in canonical_uris(raw_path):
        canonical = canonical_request(
            method, uri, query, headers, signed.signed_headers, payload_hash
        )
        expected = sign(key, string_to_sign(signed.amz_date, signed.credential.scope, canonical))
        if hmac.compare_digest(expected, signed.signature):
            return key
    raise S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided",
    )


class ChunkSigner:
    """Checks the chained signatures of an aws-chunked body: each chunk's signature signs its
    data's SHA-256 and the previous chunk's signature (the first: the request's)."""

    def __init__(self, key: bytes, signed: SignedRequest) -> None:
        self._key = key
        self._amz_date = signed.amz_date
        self._scope = signed.credential.scope
        self.previous = signed.signature

    def check(self, data_sha256: str, signature: str) -> None:
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._amz_date,
                self._scope,
                self.previous,
                EMPTY_SHA256,
                data_sha256,
            ]
        )
        if not hmac.compare_digest(sign(self._key, text), signature):
            raise S3Error(403, "SignatureDoesNotMatch", "a chunk signature of the body is wrong")
        self.previous = signature

    def check_trailer(self, trailer: bytes, signature: str) -> None:
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                self._amz_date,
                self._scope,
                self.previous,
                hashlib.sha256(trailer).hexdigest(),
            ]
        )
        if not hmac.compare_digest(sign(self._key, text), signature):
            raise S3Error(
                403, "SignatureDoesNotMatch", "the trailer signature of the body is wrong"
            )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, text.encode(), "sha256")
