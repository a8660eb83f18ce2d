"""A FAKE in-memory stand-in for peer.client.api_client.Client, for rendering and UI tests.

It implements the methods the TUI calls with the same shapes and errors (QfsError with status
None for an unreachable peer, Conflict for siblings), over fixed data. It checks nothing about
peers: the tests against a real cluster (test_tui_cluster.py) do that.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from peer.client.api_client import Conflict, FileInfo, QfsError, format_mode, normalize_path

MTIME = 1_767_225_600.0  # 2026-01-01 00:00 UTC: fixed so snapshots do not move

MEMBERS = [
    ("p1", "alive", 1, 0.2),
    ("p2", "alive", 4, 0.6),
    ("p3", "suspect", 2, 3.1),
]


@dataclass
class FakeWorld:
    """What the fake peers share: files, siblings, members, and which URLs are down."""

    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    siblings: dict[str, list[tuple[dict[str, Any], bytes]]] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    move_supported: bool = True
    attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Path -> its mode/owner/group as listed; a path missing here is listed without them."""
    repair: dict[str, Any] | None = None
    """The ``repair`` object of cluster(); None leaves it out (an older peer)."""

    def add_file(self, path: str, data: bytes) -> None:
        self.files[path] = data
        parts = path.split("/")[1:-1]
        for i in range(len(parts)):
            self.dirs.add("/" + "/".join(parts[: i + 1]))


def sample_world() -> FakeWorld:
    """A small tree with text, binary, a big file, a conflicted file and three members."""
    world = FakeWorld()
    world.add_file("/README.md", b"# quorumfs\n\nA leaderless file store.\n")
    world.add_file("/src/main.py", b'def main() -> int:\n    print("hello")\n    return 0\n')
    world.add_file("/src/util.py", b"X = 1\n")
    world.add_file("/photos/cat.jpg", bytes(range(256)) * 8)
    world.add_file("/big.bin", b"\0" * (3 << 20))
    world.add_file("/notes.txt", b"version A\n")
    world.siblings["/notes.txt"] = [
        (
            {"version": "v-a", "size": 10, "blake3": "a" * 64, "mtime": MTIME, "writer": "p1"},
            b"version A\n",
        ),
        (
            {"version": "v-b", "size": 10, "blake3": "b" * 64, "mtime": MTIME + 60, "writer": "p2"},
            b"version B\n",
        ),
    ]
    world.attrs = {
        "/photos": {"mode": "0755", "owner": "alice", "group": "family"},
        "/src": {"mode": "0750", "owner": "bob", "group": "devs"},
        "/README.md": {"mode": "0644", "owner": "alice", "group": "staff"},
        "/notes.txt": {"mode": "0600", "owner": "carol", "group": "staff"},
        "/src/main.py": {"mode": "0755", "owner": "bob", "group": "devs"},
    }  # /big.bin and the rest: listed without mode/owner/group
    world.repair = {
        "under_replicated": 2,
        "hints_pending": 1,
        "anti_entropy_rounds": 14,
        "last_round_s": 3.2,
        "records_repaired": 12,
        "blocks_repaired": 3,
        "bytes_moved": 3 << 20,
        "handed_over": 0,
        "scrub_passes": 3,
        "scrub_position": 120,
        "scrub_blocks_verified": 4512,
        "corrupt_blocks_found": 1,
        "corrupt_blocks_repaired": 1,
        "gc_blocks_removed": 7,
        "gc_tombstones_purged": 2,
        "gc_last_skip": "",
    }
    world.members = [
        {
            "name": name,
            "id": f"id-{name}",
            "state": state,
            "incarnation": inc,
            "addr": f"127.0.0.1:700{i}",
            "http": f"http://127.0.0.1:800{i}",
            "last_heard_s": heard,
        }
        for i, (name, state, inc, heard) in enumerate(MEMBERS, start=1)
    ]
    return world


class FakeClient:
    """Answers like one peer of ``world`` at ``base_url`` (down if the URL is in world.down)."""

    def __init__(self, world: FakeWorld, base_url: str = "http://127.0.0.1:8001") -> None:
        self.world = world
        self.base_url = base_url

    def _check(self, op: str, path: str = "") -> None:
        self.world.calls.append((op, path))
        if self.base_url in self.world.down:
            raise QfsError(None, "unreachable", f"cannot connect to {self.base_url}")

    def with_base_url(self, base_url: str) -> FakeClient:
        return FakeClient(self.world, base_url)

    def healthy(self, timeout: float = 5.0) -> bool:
        return self.base_url not in self.world.down

    def close(self) -> None:
        pass

    def _name(self) -> str:
        return next(m["name"] for m in self.world.members if m["http"] == self.base_url)

    def cluster(self) -> dict[str, Any]:
        self._check("cluster")
        answer = {
            "self": self._name(),
            "members": [dict(m) for m in self.world.members],
            "config": {"n": 3, "r": 2, "w": 2, "block_size": 1 << 20},
        }
        if self.world.repair is not None:
            answer["repair"] = dict(self.world.repair)
        return answer

    def ls(self, path: str = "/") -> list[dict[str, Any]]:
        path = normalize_path(path)
        self._check("ls", path)
        if path not in self.world.dirs:
            raise QfsError(404, "not found", f"no directory at {path}")
        prefix = path.rstrip("/") + "/"
        entries = []
        for d in sorted(self.world.dirs):
            if d != "/" and d.startswith(prefix) and "/" not in d[len(prefix) :]:
                entry = {"name": d[len(prefix) :], "type": "dir", "size": 0, "mtime": MTIME}
                entries.append({**entry, **self.world.attrs.get(d, {})})
        for f, data in sorted(self.world.files.items()):
            if f.startswith(prefix) and "/" not in f[len(prefix) :]:
                entry = {
                    "name": f[len(prefix) :],
                    "type": "file",
                    "size": len(data),
                    "mtime": MTIME,
                }
                if f in self.world.siblings:
                    entry["conflict"] = True
                entries.append({**entry, **self.world.attrs.get(f, {})})
        return entries

    def stat(self, remote: str) -> dict[str, Any]:
        path = normalize_path(remote)
        self._check("stat", path)
        if path in self.world.siblings:
            raise QfsError(300, "conflict", f"{path} has concurrent versions")
        if path not in self.world.files:
            raise QfsError(404, "not found", path)
        data = self.world.files[path]
        blocks = (
            [
                {
                    "hash": f"{i:02x}" * 32,
                    "size": min(1 << 20, len(data) - i * (1 << 20)),
                    "holders": ["p1", "p2", "p3"] if i % 2 == 0 else ["p1", "p3"],
                }
                for i in range((len(data) + (1 << 20) - 1) // (1 << 20))
            ]
            if len(data) > 4096
            else []
        )
        return {
            "path": path,
            "size": len(data),
            "blake3": "c" * 64,
            "mtime": MTIME,
            "version": "v1",
            "inline": not blocks,
            "replicas": ["p1", "p2", "p3"],
            "blocks": blocks,
        }

    def get(
        self,
        remote: str,
        sink: BinaryIO,
        *,
        version: str | None = None,
        r: int | None = None,
        progress: Any = None,
    ) -> FileInfo:
        path = normalize_path(remote)
        self._check("get", path)
        if path in self.world.siblings and version is None:
            raise Conflict(path, "ctx-1", [s for s, _ in self.world.siblings[path]])
        if version is not None and path in self.world.siblings:
            data = next(d for s, d in self.world.siblings[path] if s["version"] == version)
        elif path in self.world.files:
            data = self.world.files[path]
        else:
            raise QfsError(404, "not found", path)
        for i in range(0, len(data), 1 << 20):
            sink.write(data[i : i + (1 << 20)])
            if progress is not None:
                progress(min(len(data), i + (1 << 20)), len(data))
        return FileInfo(len(data), None, "v1", "ctx-1", 0o644)

    def get_bytes(self, remote: str, *, version: str | None = None) -> bytes:
        buffer = io.BytesIO()
        self.get(remote, buffer, version=version)
        return buffer.getvalue()

    def put(
        self,
        remote: str,
        source: BinaryIO | bytes,
        *,
        mode: Any = None,
        version: str | None = None,
        w: int | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        path = normalize_path(remote)
        self._check("put", path)
        data = source if isinstance(source, bytes) else source.read()
        if progress is not None:
            progress(len(data), len(data))
        if version is not None:
            self.world.siblings.pop(path, None)
        self.world.add_file(path, data)
        return {"path": path, "size": len(data), "blake3": "d" * 64, "version": "v2"}

    def rm(self, remote: str) -> None:
        path = normalize_path(remote)
        self._check("rm", path)
        self.world.files.pop(path, None)

    def rmdir(self, path: str, *, recursive: bool = False) -> None:
        path = normalize_path(path)
        self._check("rmdir", path)
        self.world.dirs.discard(path)
        for f in [f for f in self.world.files if f.startswith(path + "/")]:
            del self.world.files[f]

    def mkdir(self, path: str, *, parents: bool = False) -> None:
        path = normalize_path(path)
        self._check("mkdir", path)
        self.world.dirs.add(path)

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        src, dst = normalize_path(src), normalize_path(dst)
        self._check("move", src)
        if not self.world.move_supported:
            raise QfsError(404, "not found", "no route '/v1/move'")
        self.world.add_file(dst, self.world.files.pop(src))
        return {"path": dst}

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        src, dst = normalize_path(src), normalize_path(dst)
        self._check("copy", src)
        if src not in self.world.files:
            raise QfsError(404, "not found", src)
        if dst in self.world.files and not overwrite:
            raise QfsError(409, "exists", f"{dst} exists")
        self.world.add_file(dst, self.world.files[src])
        return {"path": dst}

    def chmod(self, path: str, mode: int | str) -> dict[str, Any]:
        path = normalize_path(path)
        self._check("chmod", path)
        if path not in self.world.files and path not in self.world.dirs:
            raise QfsError(404, "not found", path)
        self.world.attrs.setdefault(path, {})["mode"] = format_mode(mode)
        return {"path": path, **self.world.attrs[path]}
