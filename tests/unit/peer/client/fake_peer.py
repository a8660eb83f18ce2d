"""An in-memory fake of a peer's HTTP API, plugged into httpx as a transport.

It answers the routes of design.md's "HTTP API" with the same status codes and JSON shapes, and
records each request with the body chunks exactly as the client sent them, so tests can check
both what went over the wire and what the client made of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import blake3
import httpx

MEMBERS = [
    {
        "name": "p1",
        "id": "id1",
        "state": "alive",
        "incarnation": 0,
        "addr": "127.0.0.1:7001",
        "http": "http://127.0.0.1:8001",
    },
    {
        "name": "p2",
        "id": "id2",
        "state": "suspect",
        "incarnation": 3,
        "addr": "127.0.0.1:7002",
        "http": "http://127.0.0.1:8002",
    },
]


@dataclass
class Seen:
    """One request as it arrived: the body is the list of chunks the client sent."""

    method: str
    raw_path: str
    params: dict[str, str]
    headers: httpx.Headers
    chunks: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class StoredFile:
    data: bytes
    mode: int
    version: str


def _error(status: int, error: str, detail: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "detail": detail, **extra})


@dataclass
class FakePeer(httpx.BaseTransport):
    """A peer holding files and dirs in dicts. ``conflicts[path]`` makes a read answer 300."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    conflicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    token: str | None = None
    chunk_size: int = 64 * 1024
    seen: list[Seen] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [bytes(c) for c in request.stream]  # type: ignore[union-attr]
        raw_path = request.url.raw_path.decode("ascii").partition("?")[0]
        seen = Seen(request.method, raw_path, dict(request.url.params), request.headers, chunks)
        self.seen.append(seen)
        if (
            self.token is not None
            and request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            return _error(401, "unauthorized", "missing or unknown token")
        return self._route(seen)

    @property
    def last(self) -> Seen:
        return self.seen[-1]

    def _route(self, req: Seen) -> httpx.Response:
        parts = req.raw_path.split("/", 3)  # "", "v1", route, rest
        route = req.raw_path if len(parts) < 3 else f"/{parts[1]}/{parts[2]}"
        path = "/" + unquote(parts[3] if len(parts) > 3 else "").strip("/")
        handler = getattr(self, f"_{req.method.lower()}_{route.strip('/').replace('/', '_')}", None)
        if handler is None:
            return _error(404, "not_found", f"no route {req.raw_path!r}")
        return handler(req, path)

    # Files

    def _put_v1_files(self, req: Seen, path: str) -> httpx.Response:
        mode = int(req.params.get("mode", "0644"), 8)
        version = f"v{len(self.seen)}"
        self.files[path] = StoredFile(req.body, mode, version)
        self.conflicts.pop(path, None)
        digest = blake3.blake3(req.body).hexdigest()
        return httpx.Response(
            201, json={"path": path, "size": len(req.body), "blake3": digest, "version": version}
        )

    def _get_v1_files(self, req: Seen, path: str) -> httpx.Response:
        if path in self.conflicts and "version" not in req.params:
            return _error(
                300,
                "conflict",
                "2 concurrent versions",
                version="ctx-both",
                siblings=self.conflicts[path],
            )
        stored = self.files.get(path)
        if stored is None:
            return _error(404, "not_found", f"no file {path}")
        data = stored.data
        return httpx.Response(
            200,
            headers={
                "Content-Length": str(len(data)),
                "ETag": f'"{blake3.blake3(data).hexdigest()}"',
                "X-Qfs-Version": stored.version,
                "X-Qfs-Context": f"ctx-{stored.version}",
                "X-Qfs-Mode": f"{stored.mode:04o}",
            },
            stream=_Chunked(data, self.chunk_size),
        )

    def _delete_v1_files(self, req: Seen, path: str) -> httpx.Response:
        if self.files.pop(path, None) is None:
            return _error(404, "not_found", f"no file {path}")
        return httpx.Response(204)

    def _get_v1_stat(self, req: Seen, path: str) -> httpx.Response:
        stored = self.files.get(path)
        if stored is None:
            return _error(404, "not_found", f"no file {path}")
        digest = blake3.blake3(stored.data).hexdigest()
        return httpx.Response(
            200,
            json={
                "path": path,
                "size": len(stored.data),
                "blake3": digest,
                "mtime": 0,
                "version": stored.version,
                "mode": f"{stored.mode:04o}",
                "owner": "root",
                "group": "root",
                "replicas": 2,
                "blocks": [{"hash": digest, "size": len(stored.data), "holders": ["p1", "p2"]}],
            },
        )

    def _patch_v1_stat(self, req: Seen, path: str) -> httpx.Response:
        stored = self.files.get(path)
        if stored is None:
            return _error(404, "not_found", f"no file {path}")
        change = json.loads(req.body)
        if "mode" in change:
            stored.mode = int(change["mode"], 8)
        return self._get_v1_stat(req, path)

    # Directories and namespace

    def _get_v1_dirs(self, req: Seen, path: str) -> httpx.Response:
        if path not in self.dirs:
            return _error(404, "not_found", f"no directory {path}")
        prefix = path.rstrip("/") + "/"
        entries = [
            {
                "name": p[len(prefix) :],
                "type": "file",
                "size": len(f.data),
                "mtime": 0,
                "mode": f"{f.mode:04o}",
                "owner": "alice",
                "group": "staff",
            }
            for p, f in self.files.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ] + [
            {"name": d[len(prefix) :], "type": "dir", "size": None, "mtime": 0}
            for d in self.dirs
            if d != path and d.startswith(prefix) and "/" not in d[len(prefix) :]
        ]
        return httpx.Response(200, json={"path": path, "entries": entries})

    def _put_v1_dirs(self, req: Seen, path: str) -> httpx.Response:
        if path in self.files:
            return _error(409, "exists", f"{path} is a file")
        self.dirs.add(path)
        return httpx.Response(201, json={"path": path})

    def _delete_v1_dirs(self, req: Seen, path: str) -> httpx.Response:
        self.dirs.discard(path)
        return httpx.Response(204)

    def _post_v1_move(self, req: Seen, path: str) -> httpx.Response:
        return self._transfer(req, move=True)

    def _post_v1_copy(self, req: Seen, path: str) -> httpx.Response:
        return self._transfer(req, move=False)

    def _transfer(self, req: Seen, move: bool) -> httpx.Response:
        body = json.loads(req.body)
        if body["from"] not in self.files:
            return _error(404, "not_found", f"no file {body['from']}")
        if body["to"] in self.files and not body["overwrite"]:
            return _error(409, "exists", f"{body['to']} exists")
        stored = self.files.pop(body["from"]) if move else self.files[body["from"]]
        self.files[body["to"]] = stored
        return httpx.Response(200 if move else 201, json={"path": body["to"]})

    # Cluster and identity

    def _get_v1_cluster(self, req: Seen, path: str) -> httpx.Response:
        config = {"n": 3, "r": 2, "w": 2, "block_size": 1048576}
        return httpx.Response(200, json={"self": "p1", "members": MEMBERS, "config": config})

    def _get_healthz(self, req: Seen, path: str) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    def _post_v1_tokens(self, req: Seen, path: str) -> httpx.Response:
        body = json.loads(req.body)
        return httpx.Response(201, json={"id": "t1", "user": body["user"], "token": "s3cret"})

    def _get_v1_tokens(self, req: Seen, path: str) -> httpx.Response:
        tokens = [{"id": "t1", "user": "bob", "groups": ["dev", "ops"], "admin": False}]
        return httpx.Response(200, json={"tokens": tokens})

    def _delete_v1_tokens(self, req: Seen, path: str) -> httpx.Response:
        return httpx.Response(204)

    def _get_v1_whoami(self, req: Seen, path: str) -> httpx.Response:
        return httpx.Response(200, json={"user": "alice", "groups": ["staff"], "admin": True})


class _Chunked(httpx.SyncByteStream):
    """A response body that arrives in several chunks, like a real streamed file."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = data
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self._data), self._size):
            yield self._data[i : i + self._size]
