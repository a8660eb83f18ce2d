"""The client HTTP API (twisted.web): routes, argument parsing, JSON errors, streaming bodies.

Every route is a thin shell over the coordinator. Bad input is answered with a JSON error
``{"error", "detail"}`` and a 4xx status; an unexpected failure is a 500 with the same shape and
a log line, and the peer keeps serving.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.web import resource, server
from zope.interface import implementer

from peer.coordinator import Coordinator
from peer.errors import ApiError, BadRequest, MethodNotAllowed, NotFound
from peer.paths import PathError, normalize
from peer.versions import decode_version

log = logging.getLogger(__name__)

Route = Callable[[server.Request, str], Awaitable[Any]]
MAX_MODE = 0o7777


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
    ) -> None:
        super().__init__()
        self.coordinator = coordinator
        self._cluster_json = cluster_json
        self._metrics_text = metrics_text
        self._on_request = on_request
        self._routes: dict[tuple[bytes, str], Route] = {
            (b"PUT", "/v1/files"): self.put_file,
            (b"GET", "/v1/files"): self.get_file,
            (b"HEAD", "/v1/files"): self.get_file,
            (b"DELETE", "/v1/files"): self.delete_file,
            (b"GET", "/v1/dirs"): self.list_directory,
            (b"GET", "/v1/stat"): self.stat,
            (b"GET", "/v1/cluster"): self.cluster,
            (b"GET", "/healthz"): self.health,
            (b"GET", "/metrics"): self.metrics,
        }

    def render(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._serve(request))
        return server.NOT_DONE_YET

    async def _serve(self, request: server.Request) -> None:
        route_name = "unknown"
        try:
            prefix, rest = _split_route(request.path)
            route_name = prefix
            route = self._routes.get((request.method, prefix))
            if route is None:
                if any(p == prefix for _, p in self._routes):
                    raise MethodNotAllowed(
                        f"{request.method.decode()} is not supported on {prefix}"
                    )
                raise NotFound(f"no route {request.path.decode('latin-1')!r}")
            result = await route(request, rest)
            if result is not None:
                status, body = result
                _send_json(request, status, body)
        except ApiError as e:
            _send_json(request, e.status, e.to_json())
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            _send_json(
                request, 500, {"error": "internal", "detail": "the peer failed; see its log"}
            )
        self._on_request(route_name, request.code)

    # -- routes ----------------------------------------------------------------------------

    async def put_file(self, request: server.Request, rest: str) -> tuple[int, Any]:
        path = _path(rest)
        context_header = request.getHeader("x-qfs-version")
        try:
            context = decode_version(context_header) if context_header else None
        except ValueError as e:
            raise BadRequest(f"X-Qfs-Version: {e}") from None
        mode_text = _arg(request, "mode")
        mode = _parse_mode(mode_text) if mode_text is not None else 0o644
        request.content.seek(0)
        result = await self.coordinator.put_file(
            path, request.content, mode=mode, context=context, w=_int_arg(request, "w")
        )
        return 201, result

    async def get_file(self, request: server.Request, rest: str) -> None:
        path = _path(rest)
        resolved = await self.coordinator.resolve(
            path, _arg(request, "version"), _int_arg(request, "r")
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
        backpressure = Backpressure()
        request.registerProducer(backpressure, True)
        try:
            request.write(first)
            async for chunk in chunks:
                await backpressure.ready()
                if backpressure.stopped:
                    return
                request.write(chunk)
        except ApiError as e:
            log.warning("GET %s aborted after the headers: %s", path, e.detail)
            request.channel.loseConnection()  # the client sees a short body, never wrong bytes
            return
        finally:
            request.unregisterProducer()
        request.finish()

    async def delete_file(self, request: server.Request, rest: str) -> None:
        await self.coordinator.delete_file(_path(rest), _int_arg(request, "w"))
        request.setResponseCode(204)
        request.finish()

    async def list_directory(self, request: server.Request, rest: str) -> tuple[int, Any]:
        entries = await self.coordinator.list_directory(_path(rest), _int_arg(request, "r"))
        return 200, {"path": _path(rest), "entries": entries}

    async def stat(self, request: server.Request, rest: str) -> tuple[int, Any]:
        return 200, await self.coordinator.stat(_path(rest), _int_arg(request, "r"))

    async def cluster(self, request: server.Request, rest: str) -> tuple[int, Any]:
        return 200, self._cluster_json()

    async def health(self, request: server.Request, rest: str) -> tuple[int, Any]:
        return 200, {"ok": True}

    async def metrics(self, request: server.Request, rest: str) -> None:
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


def _parse_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise BadRequest(f"mode {text!r} is not an octal number such as 0644") from None
    if not 0 <= mode <= MAX_MODE:
        raise BadRequest(f"mode {text!r} is out of range (0000-7777)")
    return mode


def _send_json(request: server.Request, status: int, body: Any) -> None:
    if request.finished or request._disconnected:
        return
    payload = json.dumps(body).encode() + b"\n"
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(payload)))
    request.write(payload)
    request.finish()


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)
