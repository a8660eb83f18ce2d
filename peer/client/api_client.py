"""The client library: the one way the CLI and the TUI talk to a peer's HTTP API.

Each method is one route of the API (design.md, "HTTP API"). File bodies stream in chunks both
ways, so a file of any size passes through in bounded memory. Every failure raises ``QfsError``
(``Conflict`` for a read that found concurrent versions): ``status`` is the HTTP status, or None
when no complete, valid answer came back from the peer (``unreachable``, ``timeout``,
``connection lost``, ``corrupt``), in which case another peer may do better.
Invalid arguments (a path with ``..``, a mode that is not octal) raise ``ValueError`` before
any request is sent.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote

import blake3
import httpx

from peer.client.tls_socket import client_tls_context

DEFAULT_PEER = "http://127.0.0.1:8001"
CHUNK_SIZE = 1 << 20  # bytes per body chunk sent or received: the default block size
HEALTH_TIMEOUT = 5.0

ProgressFn = Callable[[int, int | None], None]
"""Called after each chunk with (bytes transferred so far, total bytes or None if unknown)."""

_OCTAL_MODE = re.compile(r"[0-7]{1,4}")
_ETAG_BLAKE3 = re.compile(r'"[0-9a-fA-F]{64}"')


class QfsError(Exception):
    """A request that failed; ``str()`` is one line such as ``503 quorum not met: ...``.

    ``status`` is the HTTP status, or None when the peer gave no complete answer (``error`` is
    then ``unreachable``, ``timeout`` or ``connection lost``). ``error`` and ``detail`` are the
    server's JSON error fields.
    """

    def __init__(self, status: int | None, error: str, detail: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = " ".join(detail.split())  # one line, whatever the server sent
        head = error if status is None else f"{status} {error}"
        super().__init__(f"{head}: {self.detail}" if self.detail else head)


class Conflict(QfsError):
    """A read found concurrent versions (HTTP 300).

    ``version`` is the context that resolves them when sent with a write; each sibling is a
    dict with ``version``, ``size``, ``blake3`` and ``mtime``.
    """

    def __init__(self, path: str, version: str, siblings: list[dict[str, Any]]) -> None:
        super().__init__(300, "conflict", f"{path} has {len(siblings)} concurrent versions")
        self.path = path
        self.version = version
        self.siblings = siblings


@dataclass(frozen=True)
class FileInfo:
    """What a read returned besides the bytes.

    ``version`` names the version read; ``context`` is what a write must carry (as ``version=``)
    to supersede it, e.g. to resolve a conflict after reading one sibling; ``etag`` is the raw
    header; ``mode`` the file's permission bits when the peer sent them.
    """

    size: int
    etag: str | None
    version: str | None
    context: str | None
    mode: int | None


def printable(value: object) -> str:
    """`value` as text that is safe to print on a terminal: every character that is not
    printable (ESC, CR, BEL, the C1 controls, bidi overrides such as U+202E, line separators)
    is shown as a ``\\x1b`` / ``\\u202e`` escape, so a name a peer sends can neither move the
    cursor, recolour, retitle or clear the terminal nor disguise itself as another name."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def normalize_path(path: str) -> str:
    """The canonical form of a remote path: ``a/b``, ``/a/b`` and ``/a//b/`` all give ``/a/b``.

    ``.`` and ``..`` segments are refused: URL handling would silently resolve them against
    the route and the request would reach another path than the one asked for.
    """
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"bad remote path {path!r}: '.' and '..' segments are not allowed")
    return "/" + "/".join(segments)


def format_mode(mode: int | str) -> str:
    """A mode as the API's four-digit octal string: ``0o640`` and ``"640"`` give ``"0640"``."""
    if isinstance(mode, str):
        if not _OCTAL_MODE.fullmatch(mode):
            raise ValueError(f"bad mode {mode!r}: expected octal digits such as 0644")
        mode = int(mode, 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"bad mode {mode:o}: must be between 0000 and 7777")
    return f"{mode:04o}"


def _route(prefix: str, path: str) -> str:
    """``prefix`` plus the normalized path, each segment percent-encoded as UTF-8."""
    return prefix + "/" + "/".join(quote(s, safe="") for s in normalize_path(path).split("/") if s)


def _base_url(url: str) -> str:
    """``url`` with a scheme (``http://`` if none was given) and without a trailing slash."""
    if "://" not in url:
        url = "http://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"bad peer URL {url!r}: expected http://HOST:PORT")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _params(**values: object) -> dict[str, str]:
    """Query parameters, leaving out the ones that are None."""
    return {k: str(v) for k, v in values.items() if v is not None}


def _remaining_size(source: BinaryIO | bytes) -> int | None:
    """Bytes left to read from ``source``, or None when it cannot tell (a pipe)."""
    if isinstance(source, bytes | bytearray):
        return len(source)
    try:
        if not source.seekable():
            return None
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return end - here


def _body(
    source: BinaryIO | bytes, total: int | None, progress: ProgressFn | None
) -> bytes | Iterator[bytes]:
    """What httpx sends: up to a chunk of bytes as they are (one write with the headers),
    anything larger, read from a file or watched by ``progress`` in chunks."""
    if isinstance(source, bytes | bytearray) and len(source) <= CHUNK_SIZE and progress is None:
        return bytes(source)
    return _chunks(source, total, progress)


def _chunks(
    source: BinaryIO | bytes, total: int | None, progress: ProgressFn | None
) -> Iterator[bytes]:
    """``source`` in chunks of at most CHUNK_SIZE bytes, reporting progress as they go."""
    done = 0
    if isinstance(source, bytes | bytearray):
        pieces: Iterator[bytes] = (
            bytes(source[i : i + CHUNK_SIZE]) for i in range(0, len(source), CHUNK_SIZE)
        )
    else:
        pieces = iter(lambda: source.read(CHUNK_SIZE), b"")
    for piece in pieces:
        done += len(piece)
        yield piece
        if progress is not None:
            progress(done, total)


def _mode_header(value: str | None) -> int | None:
    """The ``X-Qfs-Mode`` header as an int, or None when absent or not an octal mode."""
    if value is None or not _OCTAL_MODE.fullmatch(value := value.strip()):
        return None
    return int(value, 8)


def _etag_hash(etag: str | None) -> str | None:
    """The BLAKE3 hex digest a strong ETag carries (the peers' form), else None."""
    if etag is None or not _ETAG_BLAKE3.fullmatch(etag):
        return None
    return etag.strip('"').lower()


def _error_from(response: httpx.Response) -> QfsError:
    """The QfsError for a failed response, from its JSON ``{"error","detail"}`` if it has one."""
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return QfsError(response.status_code, body["error"], str(body.get("detail") or ""))
    reason = response.reason_phrase.lower() or "error"
    detail = ""
    if response.headers.get("content-type", "text/plain").startswith("text/plain"):
        detail = next(iter(response.text.strip().splitlines()), "")[:200]
    return QfsError(response.status_code, reason, detail)


def _json(response: httpx.Response) -> Any:
    """The JSON body of a successful response; a body that is not JSON is a QfsError."""
    try:
        return response.json()
    except ValueError:
        raise QfsError(
            response.status_code,
            "bad response",
            f"{response.request.method} {response.request.url.path} did not answer JSON",
        ) from None


def _field(body: Any, key: str, response: httpx.Response) -> Any:
    """``body[key]`` of a JSON object answer; a missing key is a QfsError naming the route."""
    if not isinstance(body, dict) or key not in body:
        raise QfsError(
            response.status_code,
            "bad response",
            f"{response.request.method} {response.request.url.path} answered without {key!r}",
        )
    return body[key]


class Client:
    """A synchronous client of one peer; like the httpx.Client inside, it can be shared
    between threads (the TUI's workers).

    ``token`` is sent as ``Authorization: Bearer TOKEN``, never over plain http:// to anything
    but loopback (ValueError); an https:// peer's certificate must be signed by the cluster CA
    in the file ``ca`` (the system's CAs without it); ``transport`` replaces the network
    (tests pass an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_PEER,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        ca: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        url = httpx.URL(self.base_url)
        if token and url.scheme == "http" and not _is_loopback(url.host):
            raise ValueError(
                f"refusing to send the token in clear to {self.base_url}: use https:// "
                "(and --ca FILE or QFS_CA for the cluster CA)"
            )
        self.token = token
        self.timeout = timeout
        self.ca = ca
        self._transport = transport
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: peers are addressed directly, never through an HTTP(S)_PROXY.
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,
            verify=client_tls_context(ca),
        )

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"  # never the token

    def with_base_url(self, base_url: str) -> Client:
        """A client of another peer with the same token and timeout (for failing over)."""
        return Client(base_url, self.token, self.timeout, ca=self.ca, transport=self._transport)

    # Files

    def put(
        self,
        remote: str,
        source: BinaryIO | bytes,
        *,
        mode: int | str | None = None,
        version: str | None = None,
        w: int | None = None,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Write ``source`` to ``remote``, streamed from its current position; the 201 JSON.

        ``mode`` sets a new file's mode; ``version`` is the context of an earlier read, so the
        write supersedes what that read saw (resolving siblings); ``w`` overrides the write
        quorum. Content-Length is sent when the size can be known, else chunked encoding.
        """
        headers = {"X-Qfs-Version": version} if version is not None else {}
        total = _remaining_size(source)
        if total is not None:
            headers["Content-Length"] = str(total)
        params = _params(mode=None if mode is None else format_mode(mode), w=w)
        response = self._request(
            "PUT",
            _route("/v1/files", remote),
            params=params,
            headers=headers,
            content=_body(source, total, progress),
        )
        return _json(response)

    def get(
        self,
        remote: str,
        sink: BinaryIO,
        *,
        version: str | None = None,
        r: int | None = None,
        progress: ProgressFn | None = None,
    ) -> FileInfo:
        """Stream ``remote`` into ``sink``; raises Conflict when it has concurrent versions.

        ``version`` reads one sibling; ``r`` overrides the read quorum. Nothing is written to
        ``sink`` unless the peer answered 200. When the ETag carries the file's BLAKE3 hash the
        bytes are checked against it at the end: a mismatch raises QfsError ``corrupt`` (the
        sink then holds bad bytes; the CLI discards its temporary file).
        """
        path = normalize_path(remote)
        url = _route("/v1/files", path)
        with (
            self._talking(),
            self._http.stream("GET", url, params=_params(version=version, r=r)) as response,
        ):
            if response.status_code == 300:
                raise self._conflict(path, response)
            if not response.is_success:
                raise _error_from(response)
            headers = response.headers
            length = headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            expected = _etag_hash(headers.get("ETag"))
            hasher = blake3.blake3() if expected else None
            done = 0
            for chunk in response.iter_bytes(CHUNK_SIZE):
                if hasher is not None:
                    hasher.update(chunk)
                sink.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if hasher is not None and hasher.hexdigest() != expected:
            detail = f"{path}: the bytes received do not hash to the ETag {expected}"
            raise QfsError(None, "corrupt", detail)
        return FileInfo(
            size=done,
            etag=headers.get("ETag"),
            version=headers.get("X-Qfs-Version"),
            context=headers.get("X-Qfs-Context"),
            mode=_mode_header(headers.get("X-Qfs-Mode")),
        )

    def get_bytes(self, remote: str, *, version: str | None = None, r: int | None = None) -> bytes:
        """The whole content of ``remote`` in memory: for small files only."""
        buffer = io.BytesIO()
        self.get(remote, buffer, version=version, r=r)
        return buffer.getvalue()

    def rm(self, remote: str) -> None:
        """Delete the file ``remote`` (a tombstone on its replicas)."""
        self._request("DELETE", _route("/v1/files", remote))

    def stat(self, remote: str) -> dict[str, Any]:
        """Metadata of ``remote``: size, blake3, mtime, version, mode, owner, group, blocks."""
        return _json(self._request("GET", _route("/v1/stat", remote)))

    # Directories and namespace

    def list_dir(self, path: str = "/") -> dict[str, Any]:
        """The listing of directory ``path`` as the peer sent it: ``{"path", "entries"}``."""
        response = self._request("GET", _route("/v1/dirs", path))
        listing = _json(response)
        _field(listing, "entries", response)
        return listing

    def ls(self, path: str = "/") -> list[dict[str, Any]]:
        """The entries of directory ``path``: name, type, size, mtime (mode, owner, group)."""
        return self.list_dir(path)["entries"]

    def mkdir(self, path: str, *, parents: bool = False) -> None:
        """Create directory ``path``; ``parents`` also creates missing ancestors."""
        self._request(
            "PUT", _route("/v1/dirs", path), params=_params(parents=1 if parents else None)
        )

    def rmdir(self, path: str, *, recursive: bool = False) -> None:
        """Remove directory ``path``; without ``recursive`` it must be empty."""
        params = _params(recursive=1 if recursive else None)
        self._request("DELETE", _route("/v1/dirs", path), params=params)

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Move ``src`` to ``dst`` (not atomic, re-running finishes it); the ``{"path"}`` JSON."""
        return self._transfer("/v1/move", src, dst, overwrite)

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Copy ``src`` to ``dst`` (the blocks are shared, not copied); the ``{"path"}`` JSON."""
        return self._transfer("/v1/copy", src, dst, overwrite)

    def chmod(self, path: str, mode: int | str) -> dict[str, Any]:
        """Set the permission bits of ``path``; the new stat."""
        return self._patch_stat(path, {"mode": format_mode(mode)})

    def chown(self, path: str, owner: str | None, group: str | None = None) -> dict[str, Any]:
        """Set the owner and/or the group of ``path`` (None leaves one as it is); the new stat."""
        if owner is None and group is None:
            raise ValueError("chown needs an owner, a group or both")
        return self._patch_stat(path, _params(owner=owner, group=group))

    # Cluster

    def cluster(self) -> dict[str, Any]:
        """Membership as the answering peer sees it: ``{"self", "members", "config"}``."""
        return _json(self._request("GET", "/v1/cluster"))

    def healthy(self, timeout: float = HEALTH_TIMEOUT) -> bool:
        """Whether the peer answers /healthz with success within ``timeout``; never raises."""
        try:
            return self._http.get("/healthz", timeout=timeout).is_success
        except httpx.HTTPError:
            return False

    # Identity

    def token_create(
        self, user: str, groups: list[str] | tuple[str, ...] = (), *, admin: bool = False
    ) -> dict[str, Any]:
        """Create a token for ``user`` (admin only); ``{"id","user","token"}``, shown once."""
        body = {"user": user, "groups": list(groups), "admin": admin}
        response = self._request("POST", "/v1/tokens", json=body)
        created = _json(response)
        _field(created, "token", response)
        return created

    def token_list(self) -> list[dict[str, Any]]:
        """All tokens (admin only), without their secrets: ``{"id","user","groups","admin"}``."""
        response = self._request("GET", "/v1/tokens")
        return _field(_json(response), "tokens", response)

    def token_revoke(self, token_id: str) -> None:
        """Revoke the token ``token_id`` (admin only)."""
        self._request("DELETE", "/v1/tokens/" + quote(token_id, safe=""))

    def s3_key_create(self, user: str, groups: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """Create an S3 key for ``user`` (admin only): ``{"access_key_id",
        "secret_access_key","user","groups"}``, the secret shown only once."""
        response = self._request("POST", "/v1/s3/keys", json={"user": user, "groups": list(groups)})
        created = _json(response)
        _field(created, "secret_access_key", response)
        return created

    def s3_key_list(self) -> list[dict[str, Any]]:
        """All S3 keys (admin only), without secrets: ``{"id","user","groups"}``."""
        response = self._request("GET", "/v1/s3/keys")
        return _field(_json(response), "keys", response)

    def s3_key_revoke(self, key_id: str) -> None:
        """Revoke the S3 key ``key_id`` (admin only)."""
        self._request("DELETE", "/v1/s3/keys/" + quote(key_id, safe=""))

    def whoami(self) -> dict[str, Any]:
        """Who this client's token is: ``{"user","groups","admin"}``."""
        return _json(self._request("GET", "/v1/whoami"))

    # Lifetime

    def close(self) -> None:
        """Close the connections to the peer."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Internals

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Turn transport failures into QfsError with ``status`` None."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            detail = f"cannot connect to {self.base_url}: {exc}"
            raise QfsError(None, "unreachable", detail) from exc
        except httpx.TimeoutException as exc:
            raise QfsError(
                None, "timeout", f"no answer from {self.base_url} within {self.timeout:g}s"
            ) from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise QfsError(None, "connection lost", f"{self.base_url}: {reason}") from exc

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; any answer but a 2xx is raised as QfsError."""
        with self._talking():
            response = self._http.request(method, url, **kwargs)
        if not response.is_success:
            raise _error_from(response)
        return response

    def _conflict(self, path: str, response: httpx.Response) -> Conflict:
        response.read()
        body = _json(response)
        siblings = _field(body, "siblings", response)
        return Conflict(path, str(_field(body, "version", response)), list(siblings))

    def _transfer(self, route: str, src: str, dst: str, overwrite: bool) -> dict[str, Any]:
        body = {"from": normalize_path(src), "to": normalize_path(dst), "overwrite": overwrite}
        return _json(self._request("POST", route, json=body))

    def _patch_stat(self, path: str, changes: Mapping[str, str]) -> dict[str, Any]:
        return _json(self._request("PATCH", _route("/v1/stat", path), json=dict(changes)))
