"""One real 3-peer cluster (cluster key, tokens, a 1 s idle timeout) for the security probes,
and the measurements they make of a peer process: CPU time, RSS, open files, /healthz latency."""

from __future__ import annotations

import http.client
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import blake3
import cbor2
import pytest

from gossip.wire import FLAG_MAC, KEY_CONTEXT, LENGTH_PREFIX, MAGIC, PROTOCOL_VERSION
from tests.support import LocalCluster, running_cluster

IDLE_TIMEOUT = 1.0
ADMIN = secrets.token_urlsafe(24)


@dataclass
class Target:
    """The cluster under attack and what an attacker (or the test) knows about it."""

    cluster: LocalCluster
    key: bytes
    tmp: Path  # the peers' TMPDIR

    def pid(self, name: str = "p1") -> int:
        pid = self.cluster.peer(name).pid
        assert pid is not None
        return pid

    def rpc_port(self, name: str = "p1") -> int:
        return self.cluster.ports[name][0]

    def url(self, name: str = "p1") -> str:
        return self.cluster.peer(name).http_url


@pytest.fixture(scope="package")
def target(tmp_path_factory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("security")
    key = secrets.token_hex(32).encode()
    (root / "cluster.key").write_bytes(key)
    (root / "cluster.key").chmod(0o600)  # a key others may read is refused
    (root / "admin.token").write_text(ADMIN + "\n")
    (root / "admin.token").chmod(0o600)  # a token file others may read is refused
    tmp = root / "tmp"
    tmp.mkdir()
    extra = [
        "--cluster-key-file", str(root / "cluster.key"),
        "--admin-token-file", str(root / "admin.token"),
        "--idle-timeout", str(IDLE_TIMEOUT),
    ]  # fmt: skip
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # inherited by the peers only: they start inside
    try:
        with running_cluster(root, 3, extra=extra, token=ADMIN) as cluster:
            restore(saved)
            yield Target(cluster, key, tmp)
    finally:
        restore(saved)


def restore(saved: str | None) -> None:
    if saved is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved


def sealed(key: bytes, kind: str, body: object) -> bytes:
    """A message as gossip/wire.py lays it out (header, keyed BLAKE3 MAC, CBOR), its CBOR
    written with value sharing, which the codec's own encoder never uses."""
    payload = cbor2.dumps([PROTOCOL_VERSION, kind, body], value_sharing=True)
    header = bytes([MAGIC, FLAG_MAC])
    mac = blake3.blake3(header, key=blake3.blake3(key, derive_key_context=KEY_CONTEXT).digest())
    mac.update(payload)
    return header + mac.digest() + payload


def framed(message: bytes) -> bytes:
    return LENGTH_PREFIX.pack(len(message)) + message


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_files_under(pid: int, folder: Path) -> list[str]:
    """The process's open files inside `folder` (unnamed O_TMPFILE files included)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def healthz_seconds(url: str) -> float:
    """How long one GET /healthz takes on a fresh connection (plain http.client: building an
    httpx client alone can take longer than the answer)."""
    parts = urlsplit(url)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 200
    return time.perf_counter() - started
