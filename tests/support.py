"""A local cluster of real `qfs peer` processes for integration tests, chaos runs and benchmarks.

Ports are picked free on 127.0.0.1 (the same number for UDP gossip and TCP RPC); every peer
gets its own data directory; only processes started here are signalled, by PID.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx

from peer.client import launcher
from peer.client.api_client import Client
from peer.client.launcher import PeerProcess
from peer.cluster_setup import init_cluster, issue_cert


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port found")


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str | Callable[[], str],
    poll: float = 0.1,
) -> None:
    """Poll `predicate` every `poll` s until it is true; TimeoutError naming `what` otherwise
    (a callable `what` is asked at the timeout, so it can say what the cluster showed then)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise TimeoutError(f"{said}: not within {timeout}s")
        time.sleep(poll)


def make_cluster_dir(folder: Path, names: list[str]) -> str:
    """`qfs cluster init` in `folder` and a certificate (127.0.0.1, localhost) for each of
    `names`; returns the admin token."""
    token = init_cluster(folder)
    for name in names:
        issue_cert(folder, name, ["127.0.0.1", "localhost"])
    return token



def boto_client(endpoint: str, key: dict[str, str], **options: object):  # type: ignore[no-untyped-def]
    """boto3's S3 client for the access key `key` (as `qfs s3 key create --json` prints it) at
    `endpoint` (more boto3.client options as given)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"],
        region_name="us-east-1",
        **options,
    )

class LocalCluster:
    """`size` peers on 127.0.0.1 joining each other, with data under `root`: open (--insecure)
    peers, or with `tls_dir` (a folder from make_cluster_dir) a secure cluster over HTTPS."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        extra: list[str] | None = None,
        token: str | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.extra = list(extra or [])
        self.token = token
        self.tls_dir = tls_dir
        self.ca = str(tls_dir / "ca.crt") if tls_dir is not None else None
        if tls_dir is not None:
            self.extra += ["--tls-dir", str(tls_dir)]
        self.peers: list[PeerProcess] = []
        self.ports: dict[str, tuple[int, int]] = {}
        names = [f"p{i + 1}" for i in range(size)]
        for name in names:
            self.ports[name] = (free_port(), free_port())
        for name in names:
            self.peers.append(self._process(name))

    def _process(self, name: str, extra: list[str] | None = None) -> PeerProcess:
        port, http = self.ports[name]
        others = [p for n, (p, _) in self.ports.items() if n != name]
        argv = launcher.peer_argv(
            name, self.root / name, port, http, join=others, extra=self.extra + (extra or [])
        )
        return PeerProcess(name, argv, launcher.http_url_of(argv))

    def add(self, name: str, timeout: float = 30.0) -> PeerProcess:
        """Start one more peer joining the others and wait until everyone sees it."""
        self.ports[name] = (free_port(), free_port())
        peer = self._process(name)
        self.peers.append(peer)
        launcher.start(peer, log_dir=self.root / "logs")
        launcher.wait_converged(
            [p for p in self.peers if p.running()], timeout, self.token, self.ca
        )
        return peer

    def peer(self, name: str) -> PeerProcess:
        """The peer called `name`."""
        return next(p for p in self.peers if p.name == name)

    def start(self, timeout: float = 30.0) -> float:
        """Start every peer and wait until they all see each other; seconds to converge."""
        for peer in self.peers:
            if not peer.running():
                launcher.start(peer, log_dir=self.root / "logs")
        return launcher.wait_converged(self.peers, timeout, self.token, self.ca)

    def client(self, name: str = "p1", **kw: object) -> Client:
        """A client talking to peer `name` (with the cluster's token unless one is given)."""
        kw.setdefault("token", self.token)
        kw.setdefault("ca", self.ca)
        return Client(self.peer(name).http_url, **kw)  # type: ignore[arg-type]

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signal one peer (SIGKILL by default) and, for a kill, wait for it to be gone."""
        peer = self.peer(name)
        peer.signal(signum)
        if signum in (signal.SIGKILL, signal.SIGTERM) and peer.process is not None:
            peer.process.wait(15)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start a stopped peer again with the same data and wait for the cluster to converge."""
        peer = self.peer(name)
        if peer.running():
            raise RuntimeError(f"{name} is still running")
        launcher.start(peer, log_dir=self.root / "logs")
        launcher.wait_converged(
            [p for p in self.peers if p.running()], timeout, self.token, self.ca
        )

    def wait_state(self, observer: str, member: str, state: str, timeout: float = 20.0) -> None:
        """Wait until `observer` sees `member` in gossip state `state`."""
        deadline = time.monotonic() + timeout
        url = self.peer(observer).http_url + "/v1/cluster"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                members = httpx.get(url, timeout=2, headers=headers, verify=self.verify()).json()[
                    "members"
                ]
                if any(m["name"] == member and m["state"] == state for m in members):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{observer} did not see {member} {state} within {timeout}s")

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx needs to check this cluster's peers (its CA, for a secure cluster)."""
        return ssl.create_default_context(cafile=self.ca) if self.ca else True

    def stop(self) -> None:
        """Stop every peer still running (SIGTERM, then SIGKILL)."""
        launcher.stop(self.peers)

    def log(self, name: str) -> str:
        """The output of peer `name` so far (for failure messages)."""
        path = self.peer(name).log_path
        return path.read_text(errors="replace") if path and path.exists() else ""


@contextlib.contextmanager
def running_cluster(
    root: Path,
    size: int = 3,
    extra: list[str] | None = None,
    token: str | None = None,
    tls_dir: Path | None = None,
) -> Iterator[LocalCluster]:
    """A started LocalCluster, stopped on exit whatever happens."""
    cluster = LocalCluster(root, size, extra, token, tls_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def print_results(results: dict[str, object], as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one aligned `name value` line each."""
    if as_json:
        print(json.dumps(results))
        return
    width = max(map(len, results), default=0) + 2
    for key, value in results.items():
        print(f"{key:{width}} {value}")
