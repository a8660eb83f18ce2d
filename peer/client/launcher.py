"""Starting and stopping local `qfs peer` processes: from a Procfile for `qfs demo`, and for the
integration, chaos and benchmark scripts that need a real cluster on 127.0.0.1.

Only processes started here are signalled, by PID.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from honcho.environ import parse_procfile

STOP_TIMEOUT = 25.0  # a leave first hands over for up to --handover-timeout (20 s by default)


@dataclass
class PeerProcess:
    """One running peer: its name, command line, HTTP URL and process handle."""

    name: str
    argv: list[str]
    http_url: str
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """Whether the process exists and has not exited."""
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send `signum` to this peer (only if it is still ours and running)."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signum)


def qfs_command() -> list[str]:
    """How to run `qfs` with this interpreter, whatever PATH holds."""
    return [sys.executable, "-m", "peer.main"]


def read_procfile(path: str | os.PathLike[str]) -> list[PeerProcess]:
    """The peers a Procfile declares (commands starting with `qfs` run with this interpreter)."""
    text = Path(path).read_text()
    peers = []
    for name, command in parse_procfile(text).processes.items():
        argv = shlex.split(command)
        if argv and argv[0] == "qfs":
            argv = qfs_command() + argv[1:]
        peers.append(PeerProcess(name, argv, http_url_of(argv)))
    return peers


def http_url_of(argv: list[str]) -> str:
    """The HTTP API URL a `qfs peer` command line serves on (https with --tls-dir)."""
    host, port = "127.0.0.1", None
    for flag, value in itertools.pairwise(argv):
        if flag == "--http":
            port = value
        elif flag == "--http-bind" and value not in ("0.0.0.0", "::"):
            host = value
    if port is None:
        raise ValueError(f"no --http port in {shlex.join(argv)}")
    scheme = "https" if "--tls-dir" in argv else "http"
    return f"{scheme}://{host}:{port}"


def peer_argv(
    name: str,
    data: Path,
    port: int,
    http: int,
    join: Iterable[int] = (),
    extra: Iterable[str] = (),
) -> list[str]:
    """The command line of a peer on 127.0.0.1 joining the peers on the `join` ports; an open
    (--insecure) peer unless `extra` gives it a --tls-dir."""
    argv = [
        *qfs_command(),
        "peer",
        "--name",
        name,
        "--data",
        str(data),
        "--port",
        str(port),
        "--http",
        str(http),
    ]
    for other in join:
        argv += ["--join", f"127.0.0.1:{other}"]
    extra = list(extra)
    if "--tls-dir" not in extra:
        argv.append("--insecure")
    return argv + extra


def start(peer: PeerProcess, log_dir: Path | None = None, cwd: Path | None = None) -> None:
    """Launch `peer`, its output going to `log_dir/<name>.log` (or discarded)."""
    output = subprocess.DEVNULL
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        peer.log_path = log_dir / f"{peer.name}.log"
        output = open(peer.log_path, "ab")  # noqa: SIM115 - the child keeps it open
    try:
        peer.process = subprocess.Popen(
            peer.argv, stdout=output, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    finally:
        if output is not subprocess.DEVNULL:
            output.close()


def wait_converged(
    peers: list[PeerProcess],
    timeout: float = 30.0,
    token: str | None = None,
    ca: str | None = None,
) -> float:
    """Wait until every running peer sees every running peer alive and holds its share (its
    rejoin phase is "ready": a peer that joined or restarted has checked and filled its data);
    seconds waited.

    `token` is sent as a bearer token (peers started with --admin-token-file need one); https
    peers must have certificates signed by the CA in the file `ca`.
    TimeoutError names the peers that had not converged.
    """
    started = time.monotonic()
    names = {p.name for p in peers if p.running()}
    lagging: dict[str, str] = dict.fromkeys(names, "not asked yet")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify = ssl.create_default_context(cafile=ca) if ca else True
    with httpx.Client(timeout=2.0, headers=headers, verify=verify) as http:
        while time.monotonic() - started < timeout:
            lagging = {}  # peer -> what it showed
            for peer in peers:
                if peer.name not in names:
                    continue
                if not peer.running():
                    raise RuntimeError(f"peer {peer.name} exited with {peer.process.returncode}")
                try:
                    cluster = http.get(peer.http_url + "/v1/cluster").json()
                    members = cluster["members"]
                    phase = cluster["repair"]["rejoin"]["phase"]
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                    lagging[peer.name] = f"no answer ({type(e).__name__}: {e})"
                    continue
                alive = {m["name"] for m in members if m["state"] == "alive"}
                if not names <= alive or phase != "ready":
                    lagging[peer.name] = f"sees {sorted(alive)} alive, rejoin {phase}"
            if not lagging:
                return time.monotonic() - started
            time.sleep(0.05)
    shown = "; ".join(f"{name}: {seen}" for name, seen in sorted(lagging.items()))
    raise TimeoutError(
        f"peers {sorted(lagging)} did not see all of {sorted(names)}, or did not hold their "
        f"share, in {timeout}s ({shown})"
    )


def stop(peers: Iterable[PeerProcess], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every running peer (a graceful leave), SIGKILL those still up after `timeout`."""
    peers = list(peers)
    for peer in peers:
        if peer.running():
            peer.signal(signal.SIGCONT)
            peer.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for peer in peers:
        if peer.process is None:
            continue
        try:
            peer.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            peer.process.kill()
            peer.process.wait()
