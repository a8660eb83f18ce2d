"""The client HTTP API (twisted.web): routes, argument parsing, JSON errors, streaming bodies.

Every route is a thin shell over the coordinator. Bad input is answered with a JSON error
``{"error", "detail"}`` and a 4xx status; an unexpected failure is a 500 with the same shape and
a log line, and the peer keeps serving.

Limits that hold before a request is authenticated or routed: a request's headers must arrive
within the channel's header deadline (it runs from the connection's first byte or the end of
the previous request, and trickling bytes does not extend it); a body is accepted only up to
its route's limit (file uploads stream without one, JSON routes take MAX_JSON_BODY, every
other route SMALL_BODY) and one announced or grown past it is answered 413 at once and the
connection closed, so nothing is spooled to a temporary file. Uploads of any size and JSON
bodies of announced length are not read from the network until their route reads them, after
the token check (what one network read brought is all that is held); one without a valid
token is answered 401 and closed, its body never read; a chunked JSON body is cut off at
MAX_JSON_BODY as it is read (413, closed). Only the small bodies of other routes arrive whole
before routing (at most SMALL_BODY bytes).
`/metrics` counts requests by known route only.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.web import http, resource, server
from zope.interface import implementer

from gossip.cbor import excerpt
from peer.api.auth import Authenticator
from peer.api.incoming import BodyLost, IncomingBody
from peer.api.s3.keys import S3Keys
from peer.body import BodyReader, FileBody
from peer.coordinator import Coordinator
from peer.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from peer.namespace import Namespace
from peer.paths import PathError, normalize
from peer.permissions import ADMIN_IDENTITY, Identity, check_name, parse_mode
from peer.versions import decode_version
from storage.fsutil import StorageFull

log = logging.getLogger(__name__)

Route = Callable[[server.Request, str, Identity], Awaitable[Any]]
MAX_JSON_BODY = 64 * 1024
MAX_PAGE = 10_000  # entries per page of a paginated listing
OPEN_ROUTES = frozenset({"/healthz", "/metrics"})
UPLOAD_BUFFER = 4 * 1024 * 1024  # unread upload bytes a peer holds before pausing the client
SMALL_BODY = 1024  # what a route that takes no body accepts (some clients send "{}" anyway)
JSON_ROUTES = frozenset(
    {
        (b"POST", "/v1/move"),
        (b"POST", "/v1/copy"),
        (b"PATCH", "/v1/stat"),
        (b"POST", "/v1/tokens"),
        (b"POST", "/v1/s3"),
    }
)
HEADER_TIMEOUT = 30.0
UNKNOWN_ROUTE = "unknown"


class ApiChannel(http.HTTPChannel):
    """twisted.web's HTTP/1.1 channel with a deadline for each request's headers.

    twisted's own idle timer restarts on every byte, so a client sending a header byte every
    few seconds (slowloris) would hold the connection forever; this deadline does not move.
    """

    header_timeout = HEADER_TIMEOUT
    _header_deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._await_headers()

    def allHeadersReceived(self) -> None:
        self._stop_header_clock()
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self.transport.disconnecting:
            self._await_headers()

    def connectionLost(self, reason: Any) -> None:
        self._stop_header_clock()
        super().connectionLost(reason)

    def _await_headers(self) -> None:
        self._stop_header_clock()
        self._header_deadline = self.callLater(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        deadline, self._header_deadline = self._header_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        log.info("closing HTTP connection: no complete request headers in %gs", self.header_timeout)
        self.timeoutConnection()


class _Discard:
    """The content of a refused request: whatever still arrives is dropped."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, offset: int, whence: int = 0) -> None:
        pass

    def tell(self) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _CappedBody(io.BytesIO):
    """An in-memory body of unannounced length that refuses to grow past `limit`."""

    def __init__(self, request: StreamingRequest, limit: int) -> None:
        super().__init__()
        self._request = request
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            self._request.refuse_body(self._limit)
            return 0
        return super().write(data)


UPLOAD, JSON, NO_BODY = "upload", "json", "none"


def body_kind(command: bytes, raw_path: bytes) -> str:
    """What body the route of this request line takes: a file upload (streamed, no limit),
    JSON (at most MAX_JSON_BODY) or none (at most SMALL_BODY)."""
    prefix = _split_route(raw_path.partition(b"?")[0])[0]
    if command == b"PUT" and prefix == "/v1/files":
        return UPLOAD
    return JSON if (command, prefix) in JSON_ROUTES else NO_BODY


class StreamingRequest(server.Request):
    """A request whose file upload (PUT /v1/files/..., of any length but 0) is routed as soon
    as its headers are in, its body handed to the coordinator as it arrives
    (`peer.api.incoming.IncomingBody`) instead of spooled to a temp file first: upload and
    replication overlap, and no byte of it is written to this peer's disk twice. A JSON body
    is routed early too, so that it is read only after the token is checked. Bodies past
    their route's limit are refused here (`refuse_body`). Every other request is twisted.web's
    usual one, in memory.
    """

    body: IncomingBody | None = None
    refused = False

    @staticmethod
    def body_kind(command: bytes, raw_path: bytes) -> str:
        """What body this request line's route takes (a front end other than the qfs API
        says its own: the S3 API)."""
        return body_kind(command, raw_path)

    def gotLength(self, length: int | None) -> None:
        channel = self.channel  # the request line is known here only to the channel
        kind = self.body_kind(channel._command, channel._path)
        limit = MAX_JSON_BODY if kind == JSON else SMALL_BODY
        if kind == UPLOAD and length != 0:
            self._route_now(UPLOAD_BUFFER)
        elif kind == JSON and (length is None or 0 < length <= limit):
            self._route_now(limit)  # a chunked one is capped as the route reads it
        elif kind == UPLOAD or (length is not None and length <= limit):
            super().gotLength(length)  # an empty upload, or at most SMALL_BODY: in memory
        elif length is None:
            self.content = _CappedBody(self, limit)
        else:
            self.refuse_body(limit)

    def _route_now(self, high_water: int) -> None:
        """Route the request before its body: the route reads it, after the token check."""
        channel = self.channel
        self.body = self.content = IncomingBody(self.transport, high_water)
        self.body.hold()
        super().requestReceived(channel._command, channel._path, channel._version)

    def refuse_body(self, limit: int) -> None:
        """Answer 413 now and close the connection, before the body is read or stored."""
        if self.refused:
            return
        self.refused = True
        self.content = _Discard()
        payload = _error_json(
            "payload_too_large", f"this route takes a body of at most {limit} bytes"
        )
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(payload), payload)
        )
        self.channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        if self.body is None:
            super().requestReceived(command, path, version)
        else:
            self.body.finish()


@implementer(IPushProducer)
class Backpressure:
    """Pauses a streaming response while the client's socket buffer is full."""

    def __init__(self) -> None:
        self._resumed: defer.Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = defer.Deferred()

    def resumeProducing(self) -> None:
        waiting, self._resumed = self._resumed, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> None:
        """Return once the client can take more bytes."""
        if self._resumed is not None:
            await self._resumed


class ApiResource(resource.Resource):
    """Every route of the HTTP API, dispatched by method and path prefix."""

    isLeaf = True

    def __init__(
        self,
        coordinator: Coordinator,
        cluster_json: Callable[[], dict[str, Any]],
        metrics_text: Callable[[], bytes],
        on_request: Callable[[str, int], None] = lambda route, status: None,
        auth: Authenticator | None = None,
        s3_keys: S3Keys | None = None,
    ) -> None:
        super().__init__()
        self.coordinator = coordinator
        self.namespace = Namespace(coordinator)
        self.auth = auth
        self.s3_keys = s3_keys
        self._cluster_json = cluster_json
        self._metrics_text = metrics_text
        self._on_request = on_request
        self._routes: dict[tuple[bytes, str], Route] = {
            (b"PUT", "/v1/files"): self.put_file,
            (b"GET", "/v1/files"): self.get_file,
            (b"HEAD", "/v1/files"): self.get_file,
            (b"DELETE", "/v1/files"): self.delete_file,
            (b"GET", "/v1/dirs"): self.list_directory,
            (b"PUT", "/v1/dirs"): self.make_directory,
            (b"DELETE", "/v1/dirs"): self.remove_directory,
            (b"POST", "/v1/move"): self.move,
            (b"POST", "/v1/copy"): self.copy,
            (b"GET", "/v1/stat"): self.stat,
            (b"PATCH", "/v1/stat"): self.set_attrs,
            (b"POST", "/v1/tokens"): self.create_token,
            (b"GET", "/v1/tokens"): self.list_tokens,
            (b"DELETE", "/v1/tokens"): self.revoke_token,
            (b"POST", "/v1/s3"): self.create_s3_key,
            (b"GET", "/v1/s3"): self.list_s3_keys,
            (b"DELETE", "/v1/s3"): self.revoke_s3_key,
            (b"GET", "/v1/whoami"): self.whoami,
            (b"GET", "/v1/cluster"): self.cluster,
            (b"GET", "/healthz"): self.health,
            (b"GET", "/metrics"): self.metrics,
        }
        self._prefixes = frozenset(prefix for _, prefix in self._routes)

    def render(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._serve(request))
        return server.NOT_DONE_YET

    async def _serve(self, request: server.Request) -> None:
        route_name = UNKNOWN_ROUTE
        try:
            prefix, rest = _split_route(request.path)
            route = self._routes.get((request.method, prefix))
            if route is None:
                if prefix in self._prefixes:
                    route_name = prefix
                    raise MethodNotAllowed(
                        f"{excerpt(request.method.decode('latin-1'))} is not supported on {prefix}"
                    )
                raise NotFound(f"no route {excerpt(request.path.decode('latin-1'), 80)}")
            route_name = prefix
            identity = ADMIN_IDENTITY
            if self.auth is not None and prefix not in OPEN_ROUTES:
                identity = await self.auth.identify(
                    request.getHeader(b"authorization"), request.getClientAddress().host
                )
            try:
                result = await route(request, rest, identity)
            except StorageFull as e:  # this peer's own disk, e.g. reserving version counters
                name = self.coordinator.name
                raise InsufficientStorage(f"{name}: {e}", peers=[name]) from None
            if result is not None:
                status, body = result
                await _send_json(request, status, body)
        except ApiError as e:
            if e.status == 401:
                request.setHeader("www-authenticate", 'Bearer realm="quorumfs"')
            if isinstance(e, TooManyRequests):
                request.setHeader("retry-after", str(e.retry_after))
            await _send_json(request, e.status, e.to_json())
        except BodyLost as e:
            log.info("%s %s abandoned: %s", request.method.decode(), request.path.decode(), e)
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            await _send_json(
                request, 500, {"error": "internal", "detail": "the peer failed; see its log"}
            )
        self._on_request(route_name, request.code)

    # -- routes ----------------------------------------------------------------------------

    async def put_file(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        path = _path(rest)
        context_header = request.getHeader("x-qfs-version")
        try:
            context = decode_version(context_header) if context_header else None
        except ValueError as e:
            raise BadRequest(f"X-Qfs-Version: {e}") from None
        mode_text = _arg(request, "mode")
        mode = parse_mode(mode_text) if mode_text is not None else None
        result = await self.coordinator.put_file(
            path,
            _upload_body(request),
            mode=mode,
            context=context,
            w=_int_arg(request, "w"),
            identity=identity,
        )
        return 201, result

    async def get_file(self, request: server.Request, rest: str, identity: Identity) -> None:
        path = _path(rest)
        resolved = await self.coordinator.resolve(
            path, _arg(request, "version"), _int_arg(request, "r"), identity
        )
        manifest = resolved.manifest
        chunks = self.coordinator.stream(manifest)
        first = b""
        if request.method != b"HEAD":
            first = await anext(chunks, b"")  # before the headers: a missing block is still a 503
        request.setResponseCode(200)
        request.setHeader("content-type", "application/octet-stream")
        request.setHeader("content-length", str(manifest.size))
        request.setHeader("etag", f'"{manifest.blake3}"')
        request.setHeader("x-qfs-version", resolved.version)
        request.setHeader("x-qfs-context", resolved.context)
        request.setHeader("x-qfs-mode", f"{manifest.mode:04o}")
        request.setHeader("last-modified", _http_date(manifest.mtime))
        if request.method == b"HEAD":
            request.finish()
            return
        if request.channel is None:  # the client went away while the first block was read
            return
        backpressure = Backpressure()
        request.registerProducer(backpressure, True)
        try:
            request.write(first)
            async for chunk in chunks:
                await backpressure.ready()
                if backpressure.stopped:
                    return
                request.write(chunk)
        except Exception as e:
            # The status line is out: any error now must cut the body short (the client sees
            # fewer bytes than Content-Length), never append an error to it.
            detail = e.detail if isinstance(e, ApiError) else repr(e)
            log.warning("GET %s aborted after the headers: %s", path, detail)
            if request.channel is not None:  # None: the client has gone already
                request.channel.transport.abortConnection()
            return
        finally:
            if request.channel is not None:  # None: the client has gone, and its producer
                request.unregisterProducer()
        request.finish()

    async def delete_file(self, request: server.Request, rest: str, identity: Identity) -> None:
        await self.coordinator.delete_file(_path(rest), _int_arg(request, "w"), identity)
        request.setResponseCode(204)
        request.finish()

    async def list_directory(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        limit = _int_arg(request, "limit")
        if limit is not None and not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit={limit} must be between 1 and {MAX_PAGE}")
        after = _arg(request, "after")
        if after is not None:
            check_entry_name(after)
        entries, following = await self.coordinator.list_page(
            _path(rest), _int_arg(request, "r"), identity, after=after, limit=limit
        )
        body: dict[str, Any] = {"path": _path(rest), "entries": entries}
        if following is not None:
            body["next"] = following
        return 200, body

    async def make_directory(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        parents = _flag_arg(request, "parents")
        return 201, await self.namespace.mkdir(_path(rest), parents, identity)

    async def remove_directory(
        self, request: server.Request, rest: str, identity: Identity
    ) -> None:
        await self.namespace.rmdir(_path(rest), _flag_arg(request, "recursive"), identity)
        request.setResponseCode(204)
        request.finish()

    async def move(self, request: server.Request, rest: str, identity: Identity) -> tuple[int, Any]:
        return 200, await self._transfer(request, identity, move=True)

    async def copy(self, request: server.Request, rest: str, identity: Identity) -> tuple[int, Any]:
        return 201, await self._transfer(request, identity, move=False)

    async def _transfer(
        self, request: server.Request, identity: Identity, move: bool
    ) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict) or not {"from", "to"} <= set(body) <= {
            "from",
            "to",
            "overwrite",
        }:
            raise BadRequest('expected {"from": PATH, "to": PATH, "overwrite": false}')
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise BadRequest("overwrite must be true or false")
        return await self.namespace.transfer(
            _json_path(body["from"], "from"),
            _json_path(body["to"], "to"),
            move=move,
            overwrite=overwrite,
            identity=identity,
        )

    async def stat(self, request: server.Request, rest: str, identity: Identity) -> tuple[int, Any]:
        return 200, await self.coordinator.stat(_path(rest), _int_arg(request, "r"), identity)

    async def set_attrs(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict) or not body or not set(body) <= {"mode", "owner", "group"}:
            raise BadRequest('expected {"mode": "0640"} and/or {"owner": USER, "group": GROUP}')
        mode = parse_mode(body["mode"]) if "mode" in body else None
        owner = check_name("owner", body["owner"]) if "owner" in body else None
        group = check_name("group", body["group"]) if "group" in body else None
        return 200, await self.namespace.set_attrs(
            _path(rest), mode=mode, owner=owner, group=group, identity=identity
        )

    def _tokens(self, identity: Identity) -> Authenticator:
        if self.auth is None:
            raise BadRequest("authentication is off: start the peers with --admin-token-file")
        if not identity.admin:
            raise Forbidden(f"{identity.user} is not an admin: only admins manage tokens")
        return self.auth

    async def create_token(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        tokens = self._tokens(identity)
        return 201, await tokens.create(await _json_body(request))

    async def list_tokens(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        return 200, {"tokens": await self._tokens(identity).tokens()}

    async def revoke_token(self, request: server.Request, rest: str, identity: Identity) -> None:
        tokens = self._tokens(identity)
        token_id = rest.strip("/")
        if not token_id or "/" in token_id:
            raise BadRequest("expected DELETE /v1/tokens/{id}")
        await tokens.revoke(token_id)
        request.setResponseCode(204)
        request.finish()

    def _s3_keys(self, rest: str, identity: Identity) -> tuple[S3Keys, str]:
        """The S3 key store and the key id after /v1/s3/keys/ (admins only)."""
        self._tokens(identity)
        if self.s3_keys is None:
            raise BadRequest("S3 keys need --admin-token-file")
        head, _, key_id = rest.strip("/").partition("/")
        if head != "keys" or "/" in key_id:
            raise NotFound("no route: S3 keys are under /v1/s3/keys")
        return self.s3_keys, key_id

    async def create_s3_key(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        """POST /v1/s3/keys {"user","groups"} -> 201 with the secret, shown once."""
        keys, _ = self._s3_keys(rest, identity)
        return 201, await keys.create(await _json_body(request))

    async def list_s3_keys(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        keys, _ = self._s3_keys(rest, identity)
        return 200, {"keys": await keys.keys()}

    async def revoke_s3_key(self, request: server.Request, rest: str, identity: Identity) -> None:
        keys, key_id = self._s3_keys(rest, identity)
        if not key_id:
            raise BadRequest("expected DELETE /v1/s3/keys/{id}")
        await keys.revoke(key_id)
        request.setResponseCode(204)
        request.finish()

    async def whoami(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        return 200, identity.to_json()

    async def cluster(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        return 200, self._cluster_json()

    async def health(
        self, request: server.Request, rest: str, identity: Identity
    ) -> tuple[int, Any]:
        return 200, {"ok": True}

    async def metrics(self, request: server.Request, rest: str, identity: Identity) -> None:
        request.setHeader("content-type", "text/plain; version=0.0.4; charset=utf-8")
        request.write(self._metrics_text())
        request.finish()


def _split_route(raw: bytes) -> tuple[str, str]:
    """b"/v1/files/a/b" -> ("/v1/files", "/a/b"), the rest still percent-encoded."""
    text = raw.decode("latin-1")
    if text.startswith("/v1/"):
        head, _, rest = text[len("/v1/") :].partition("/")
        return "/v1/" + head, "/" + rest
    return text, ""


def _path(rest: str) -> str:
    try:
        decoded = unquote_to_bytes(rest).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path is not valid UTF-8") from None
    try:
        return normalize(decoded)
    except PathError as e:
        raise BadRequest(f"bad path: {e}") from None


def check_entry_name(name: str) -> None:
    """BadRequest unless `name` is one name a directory can hold (a listing's `after`)."""
    if not name or "/" in name:
        raise BadRequest(f"after={name!r} must be one entry name")
    try:
        normalize(name)
    except PathError as e:
        raise BadRequest(f"after={name!r}: {e}") from None


def _arg(request: server.Request, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"query parameter {name} is not valid UTF-8") from None


def _int_arg(request: server.Request, name: str) -> int | None:
    text = _arg(request, name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 6:
        raise BadRequest(f"query parameter {name}={text!r} is not a small positive integer")
    return int(text)


def _flag_arg(request: server.Request, name: str) -> bool:
    text = _arg(request, name)
    if text is None or text.lower() in ("0", "false", "no"):
        return False
    if text.lower() in ("1", "true", "yes", ""):
        return True
    raise BadRequest(f"query parameter {name}={text!r} is not 1 or 0")


async def _json_body(request: server.Request) -> Any:
    body = getattr(request, "body", None)
    if body is not None:  # routed before its body arrived (see StreamingRequest)
        raw = await body.read(MAX_JSON_BODY + 1)
    else:
        request.content.seek(0)
        raw = request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise PayloadTooLarge(f"this route takes a body of at most {MAX_JSON_BODY} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"body is not JSON: {e}") from None


def _json_path(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a path string")
    try:
        return normalize(value)
    except PathError as e:
        raise BadRequest(f"bad path in {name}: {e}") from None


def _upload_body(request: server.Request) -> BodyReader:
    """The body of a file upload: as it arrives, or (a request built elsewhere) spooled."""
    body = getattr(request, "body", None)
    if body is not None:
        return body
    request.content.seek(0)
    return FileBody(request.content)


async def _send_json(request: server.Request, status: int, body: Any) -> None:
    """Answer with a JSON body. An upload's unread body is dropped and its end awaited first:
    twisted's channel can only answer a request whose body it has read, except by closing the
    connection after the answer, which is what a 401 does."""
    upload = getattr(request, "body", None)
    if upload is not None:
        upload.discard()
        if status in (401, 413):  # no more of our time for this body: answer, then close
            request.channel.persistent = False
            request.setHeader("connection", "close")
        else:
            await upload.settled()
    if request.finished or request._disconnected:
        return
    payload = json.dumps(body).encode() + b"\n"
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(payload)))
    request.write(payload)
    request.finish()


def _error_json(error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode() + b"\n"


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)
