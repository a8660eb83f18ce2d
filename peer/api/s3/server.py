"""The S3 API's HTTP shell (twisted.web): request parsing, SigV4 authentication, routing of
method + query to an operation, and S3's XML answers.

Requests are path-style (``/`` lists buckets, ``/BUCKET`` is a bucket, ``/BUCKET/KEY`` an
object) or, with a domain configured (``--s3-domain``), virtual-host style: a request to host
``BUCKET.DOMAIN`` names the bucket in its host and the key in its path. Each operation
(`peer.api.s3.objects`, `peer.api.s3.buckets`, `peer.api.s3.multipart`) is a thin call into
the same coordinator and namespace as the qfs API, acting as the qfs user behind the
request's access key. Anything not routed answers 501
NotImplemented; every failure is an S3 XML error document.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.web import resource, server

from peer.api.http import NO_BODY, UPLOAD, StreamingRequest
from peer.api.incoming import BodyLost
from peer.api.s3 import sigv2, sigv4
from peer.api.s3.buckets import BucketOperations
from peer.api.s3.errors import S3Error, access_denied, bad_request, from_api_error
from peer.api.s3.keys import S3Keys
from peer.api.s3.multipart import MultipartOperations
from peer.api.s3.objects import ObjectOperations
from peer.api.s3.payload import CHECKSUMS, AwsChunked, RunInThread, Verified, run_here
from peer.api.s3.xml import MAX_XML_BODY, error_document
from peer.body import BodyReader, FileBody
from peer.config import S3_UPLOAD_EXPIRY
from peer.coordinator import Coordinator
from peer.errors import ApiError
from peer.namespace import Namespace
from peer.permissions import ADMIN_IDENTITY, Identity
from storage.fsutil import StorageFull

log = logging.getLogger(__name__)

MAX_QUERY_PAIRS = 64
MAX_CHUNK = 16 * 1024 * 1024


class S3Request(StreamingRequest):
    """Every PUT and POST body is streamed, and read only once the signature is checked:
    objects and parts go straight to the coordinator, and an oversized XML body is refused
    after MAX_XML_BODY bytes instead of being spooled to disk. Other requests take no body (at
    most SMALL_BODY)."""

    @staticmethod
    def body_kind(command: bytes, raw_path: bytes) -> str:
        return UPLOAD if command in (b"PUT", b"POST") else NO_BODY


@dataclass
class Call:
    """One S3 request, parsed: who sends it, which bucket and key, its query and its body."""

    request: server.Request
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    identity: Identity
    body: BodyReader
    request_id: str
    headers: dict[str, list[str]] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The last value of header `name` (lower case), if sent."""
        values = self.headers.get(name)
        return values[-1] if values else None

    @property
    def resource(self) -> str:
        return "/" + self.bucket + ("/" + self.key if self.key else "")

    async def read_small(self, limit: int = MAX_XML_BODY) -> bytes:
        """The whole (verified) body of a request that carries a document, at most `limit`."""
        data = await self.body.read(limit + 1)  # a short read: the body's digests are checked
        if len(data) > limit:
            raise S3Error(400, "MalformedXML", f"request body larger than {limit} bytes")
        return data


Operation = Callable[[Call], Awaitable[None]]


class S3Resource(resource.Resource):
    """The S3 API of one peer. With `keys` None (a cluster without an admin token) every
    request is the admin's and signatures are not checked, as the qfs API is open then."""

    isLeaf = True

    def __init__(
        self,
        coordinator: Coordinator,
        keys: S3Keys | None,
        wall_clock: Callable[[], float],
        ticks: Callable[[], float],
        on_request: Callable[[str, int], None] = lambda route, status: None,
        domain: str | None = None,
        upload_expiry: float = S3_UPLOAD_EXPIRY,
        run_in_thread: RunInThread = run_here,
    ) -> None:
        """`wall_clock` dates signatures (time.time); `ticks` ages caches (monotonic);
        `domain` turns on virtual-host style requests for BUCKET.`domain`; `upload_expiry` is
        how long a multipart upload may stay open; `run_in_thread` runs the digests of
        request bodies."""
        super().__init__()
        self.run_in_thread = run_in_thread
        self.domain = domain
        self.coordinator = coordinator
        self.namespace = Namespace(coordinator)
        self.keys = keys
        self.wall_clock = wall_clock
        self.ticks = ticks
        self._on_request = on_request
        self.buckets = BucketOperations(self)
        self.objects = ObjectOperations(self)
        self.multipart = MultipartOperations(self, upload_expiry)

    def render(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._serve(request))
        return server.NOT_DONE_YET

    async def _serve(self, request: server.Request) -> None:
        request_id = secrets.token_hex(8).upper()
        request.setHeader("x-amz-request-id", request_id)
        request.setHeader("server", "quorumfs")
        name = "unknown"
        resource_name = "/"
        try:
            raw_path, _, raw_query = request.uri.decode("latin-1").partition("?")
            host_bucket = bucket_of_host(_host(request), self.domain)
            bucket, key = split_path(raw_path, host_bucket)
            resource_name = "/" + bucket + ("/" + key if key else "")
            pairs = parse_query(raw_query)
            query = dict(pairs)
            method = request.method.decode("latin-1")
            headers = _headers(request)
            # A V2 signature covers the bucket even when the host names it.
            v2_path = raw_path if host_bucket is None else "/" + host_bucket + raw_path
            identity, body = await self._authenticate(
                request, method, raw_path, v2_path, pairs, query, headers
            )
            call = Call(request, method, bucket, key, query, identity, body, request_id, headers)
            operation, name = self._route(call)
            try:
                await operation(call)
            except StorageFull as e:  # this peer's own disk, e.g. reserving version counters
                raise S3Error(507, "InsufficientStorage", f"{self.coordinator.name}: {e}") from None
        except S3Error as e:
            await self.send_error(request, e, resource_name, request_id)
        except ApiError as e:
            await self.send_error(request, from_api_error(e), resource_name, request_id)
        except BodyLost as e:
            log.info("S3 %s %s abandoned: %s", request.method.decode(), resource_name, e)
        except Exception:
            log.exception("S3 request %s %s failed", request.method, request.uri)
            error = S3Error(500, "InternalError", "the peer failed; see its log")
            await self.send_error(request, error, resource_name, request_id)
        self._on_request("s3 " + name, request.code)

    # -- authentication --------------------------------------------------------------------

    async def _authenticate(
        self,
        request: server.Request,
        method: str,
        raw_path: str,
        v2_path: str,
        pairs: list[tuple[str, str]],
        query: dict[str, str],
        headers: dict[str, list[str]],
    ) -> tuple[Identity, BodyReader]:
        """The identity behind the request's signature and its body as it will be read
        (decoded and verified). SigV4 signs the path as sent, SigV2 `v2_path`."""
        authorization = _last(headers, "authorization")
        signed: sigv4.SignedRequest | None = None
        if authorization is not None:
            signed = sigv4.parse_header(authorization, _last(headers, "x-amz-date"))
        elif "X-Amz-Signature" in query or "X-Amz-Credential" in query:
            signed = sigv4.parse_presigned(query)
        elif "Signature" in query or "AWSAccessKeyId" in query:
            return await self._presigned_v2(request, method, v2_path, pairs, query, headers)
        payload = _last(headers, "x-amz-content-sha256")
        if payload is None:
            if signed is not None and not signed.presigned:
                raise bad_request("missing x-amz-content-sha256 header", "InvalidRequest")
            payload = sigv4.UNSIGNED
        if self.keys is None:
            return ADMIN_IDENTITY, self._body(request, headers, payload, None)
        if signed is None:
            raise access_denied("anonymous requests are refused: sign the request with an S3 key")
        sigv4.check_time(signed, self.wall_clock())
        key = await self.keys.lookup(signed.credential.access_key)
        if key is None:
            raise _unknown_key()
        signing_key = sigv4.verify(signed, key.secret, method, raw_path, pairs, headers, payload)
        signer = sigv4.ChunkSigner(signing_key, signed)
        return key.identity(), self._body(request, headers, payload, signer)

    async def _presigned_v2(
        self,
        request: server.Request,
        method: str,
        raw_path: str,
        pairs: list[tuple[str, str]],
        query: dict[str, str],
        headers: dict[str, list[str]],
    ) -> tuple[Identity, BodyReader]:
        """A Signature Version 2 presigned URL (boto3's default for generate_presigned_url)."""
        presigned = sigv2.parse_presigned(query)
        if self.keys is None:
            return ADMIN_IDENTITY, self._body(request, headers, sigv4.UNSIGNED, None)
        sigv2.check_time(presigned, self.wall_clock())
        key = await self.keys.lookup(presigned.access_key)
        if key is None:
            raise _unknown_key()
        sigv2.verify(presigned, key.secret, method, raw_path, pairs, headers)
        return key.identity(), self._body(request, headers, sigv4.UNSIGNED, None)

    def _body(
        self,
        request: server.Request,
        headers: dict[str, list[str]],
        payload: str,
        signer: sigv4.ChunkSigner | None,
    ) -> BodyReader:
        raw: BodyReader
        streamed = getattr(request, "body", None)
        if streamed is not None:
            raw = streamed
        else:
            request.content.seek(0)
            raw = FileBody(request.content)
        checksums = {
            algorithm: value
            for algorithm in CHECKSUMS
            if (value := _last(headers, "x-amz-checksum-" + algorithm)) is not None
        }
        content_md5 = _last(headers, "content-md5")
        if payload in (sigv4.UNSIGNED,) or _is_sha256(payload):
            return Verified(
                raw,
                sha256=payload if _is_sha256(payload) else None,
                content_md5=content_md5,
                checksums=checksums,
                run_in_thread=self.run_in_thread,
            )
        if payload not in (
            sigv4.STREAMING_SIGNED,
            sigv4.STREAMING_SIGNED_TRAILER,
            sigv4.STREAMING_UNSIGNED_TRAILER,
        ):
            raise bad_request(f"x-amz-content-sha256 {payload[:80]!r} is not understood")
        length_text = _last(headers, "x-amz-decoded-content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        chunk_signer = None if payload == sigv4.STREAMING_UNSIGNED_TRAILER else signer
        chunked = AwsChunked(raw, chunk_signer, MAX_CHUNK)
        trailer = (_last(headers, "x-amz-trailer") or "").strip().lower()
        late_algorithm = trailer.removeprefix("x-amz-checksum-") if trailer else None
        return Verified(
            chunked,
            content_md5=content_md5,
            checksums=checksums,
            late=lambda: chunked.trailers,
            late_algorithm=late_algorithm,
            length=length,
            run_in_thread=self.run_in_thread,
        )

    # -- routing ---------------------------------------------------------------------------

    def _route(self, call: Call) -> tuple[Operation, str]:
        """The operation for the request's method, bucket/key and query (sub-resource)."""
        method, q = call.method, call.query
        if not call.bucket:
            if method == "GET":
                return self.buckets.list_buckets, "ListBuckets"
            raise S3Error(405, "MethodNotAllowed", f"{method} is not allowed on /")
        if not call.key:
            return self._bucket_route(call, method, q)
        if "uploadId" in q:
            routes = {
                "PUT": (self.multipart.upload_part, "UploadPart"),
                "GET": (self.multipart.list_parts, "ListParts"),
                "DELETE": (self.multipart.abort, "AbortMultipartUpload"),
                "POST": (self.multipart.complete, "CompleteMultipartUpload"),
            }
            if method in routes:
                return routes[method]
        elif "uploads" in q and method == "POST":
            return self.multipart.create, "CreateMultipartUpload"
        else:
            _refuse_subresources(q, OBJECT_PARAMETERS)
            if method == "PUT" and call.header("x-amz-copy-source") is not None:
                return self.objects.copy_object, "CopyObject"
            routes = {
                "PUT": (self.objects.put_object, "PutObject"),
                "GET": (self.objects.get_object, "GetObject"),
                "HEAD": (self.objects.get_object, "HeadObject"),
                "DELETE": (self.objects.delete_object, "DeleteObject"),
            }
            if method in routes:
                return routes[method]
        raise not_implemented(method, q)

    def _bucket_route(self, call: Call, method: str, q: dict[str, str]) -> tuple[Operation, str]:
        if method == "GET" and "location" in q:
            return self.buckets.get_location, "GetBucketLocation"
        if method == "GET" and "uploads" in q:
            return self.multipart.list_uploads, "ListMultipartUploads"
        if method == "POST" and "delete" in q:
            return self.objects.delete_objects, "DeleteObjects"
        _refuse_subresources(q, BUCKET_PARAMETERS)
        routes = {
            "GET": (self.buckets.list_objects, "ListObjects"),
            "PUT": (self.buckets.create_bucket, "CreateBucket"),
            "DELETE": (self.buckets.delete_bucket, "DeleteBucket"),
            "HEAD": (self.buckets.head_bucket, "HeadBucket"),
        }
        if method in routes:
            return routes[method]
        raise not_implemented(method, q)

    # -- answers ---------------------------------------------------------------------------

    async def finish_body(self, request: server.Request) -> None:
        """Drop an upload's unread body and wait for its end: twisted's channel can only
        answer a request whose body it has read."""
        upload = getattr(request, "body", None)
        if upload is not None:
            upload.discard()
            await upload.settled()

    async def send(
        self,
        request: server.Request,
        status: int,
        body: bytes = b"",
        content_type: str = "application/xml",
    ) -> None:
        """Answer with `body` (none for HEAD)."""
        await self.finish_body(request)
        if request.finished or request._disconnected:
            return
        request.setResponseCode(status)
        if body or content_type != "application/xml":
            request.setHeader("content-type", content_type)
        request.setHeader("content-length", str(len(body)))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    async def send_error(
        self, request: server.Request, error: S3Error, resource_name: str, request_id: str
    ) -> None:
        if error.status >= 500:
            log.info("S3 %s %s: %s", request.method.decode(), resource_name, error)
        if error.status == 503:
            request.setHeader("retry-after", "1")
        body = error_document(error.code, error.message, resource_name, request_id)
        await self.send(request, error.status, body)


PRESIGNED = frozenset({"AWSAccessKeyId", "Expires", "Signature"})
BUCKET_PARAMETERS = frozenset(
    {
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
        "x-id",
    }
)
OBJECT_PARAMETERS = frozenset(
    {
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "x-id",
    }
)


def _refuse_subresources(query: dict[str, str], allowed: frozenset[str]) -> None:
    """501 for any query parameter outside `allowed` (a sub-resource such as ?acl or ?tagging
    would otherwise be taken for the plain operation)."""
    for name in query:
        if name not in allowed and name not in PRESIGNED and not name.startswith("X-Amz-"):
            raise S3Error(
                501, "NotImplemented", f"the sub-resource or parameter {name!r} is not implemented"
            )


def not_implemented(method: str, query: dict[str, str]) -> S3Error:
    """501 NotImplemented naming the method and sub-resources asked for."""
    what = ",".join(sorted(k for k in query if not k.startswith("X-Amz-"))) or "this resource"
    return S3Error(501, "NotImplemented", f"{method} on {what} is not implemented by quorumfs")


def bucket_of_host(host: str | None, domain: str | None) -> str | None:
    """The bucket a virtual-host style request names in its Host header (``BUCKET.DOMAIN``,
    any port), or None for a path-style request (no domain configured, or another host)."""
    if domain is None or not host:
        return None
    name = host.lower()
    if name.startswith("["):  # an IPv6 literal is never a bucket's host
        return None
    name = name.rpartition(":")[0] if ":" in name else name
    suffix = "." + domain
    if not name.endswith(suffix) or len(name) == len(suffix):
        return None
    return name[: -len(suffix)]


def split_path(raw_path: str, host_bucket: str | None = None) -> tuple[str, str]:
    """(bucket, key) of a request path, percent-decoded: path-style, or the key alone when
    the host named the bucket (`host_bucket`)."""
    try:
        text = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise bad_request("the request path is not valid UTF-8") from None
    if host_bucket is not None:
        return host_bucket, text.removeprefix("/")
    bucket, _, key = text.removeprefix("/").partition("/")
    return bucket, key


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of a raw query string ('+' stays '+', as S3 signs it)."""
    if not raw:
        return []
    parts = raw.split("&")
    if len(parts) > MAX_QUERY_PAIRS:
        raise bad_request(f"more than {MAX_QUERY_PAIRS} query parameters")
    pairs = []
    for part in parts:
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
        except UnicodeDecodeError:
            raise bad_request("the query string is not valid UTF-8") from None
    return pairs


def _unknown_key() -> S3Error:
    return S3Error(
        403,
        "InvalidAccessKeyId",
        "the access key id you provided does not exist in our records (or was revoked)",
    )


def _headers(request: server.Request) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers.setdefault(name.decode("latin-1").lower(), []).extend(
            v.decode("latin-1") for v in values
        )
    return headers


def _host(request: server.Request) -> str | None:
    value = request.getHeader("host")
    return value if value is None else value.strip()


def _last(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[-1] if values else None


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
