"""`qfs demo`: start the Procfile's peers in the background, wait until they all see each other,
open the file manager on them, and stop them on exit.

The Procfile's peers run a secure cluster from one TLS folder (`--tls-dir`, `data/cluster` in the
repository's Procfile). On first use the demo creates it, through `qfs cluster init` and `qfs
cluster cert` (each peer's certificate names 127.0.0.1 and localhost), and writes
``client.toml`` there: the first peer's URL, the CA and the admin token file, which the qfs
client reads when run from the Procfile's folder (peer.client.cli), so `qfs ls` and `qfs tui`
need no flags while the demo runs. `qfs demo --init` does only that.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from peer.client import launcher
from peer.client.api_client import Client

CONVERGE_TIMEOUT = 60.0
DEMO_ADDRS = ("127.0.0.1", "localhost")


def run_demo(
    args: argparse.Namespace,
    open_ui: Callable[[Client], int],
    run_cluster: Callable[[list[str]], int],
) -> int:
    """Run the demo cluster, with `open_ui` (the file manager) on its first peer unless
    headless; `run_cluster` is `qfs cluster`, to create the TLS folder. Returns the exit status."""
    procfile = Path(getattr(args, "procfile", None) or "Procfile")
    if not procfile.is_file():
        print(f"qfs: error: no Procfile at {procfile.resolve()}", file=sys.stderr)
        return 2
    root = procfile.resolve().parent
    peers = launcher.read_procfile(procfile)
    try:
        tls_dir = _tls_dir(peers, root)
    except ValueError as e:
        print(f"qfs: error: {e}", file=sys.stderr)
        return 2
    if tls_dir is not None and not _prepare(tls_dir, peers, run_cluster):
        return 1
    if getattr(args, "init", False):
        return 0
    token, ca = None, None
    if tls_dir is not None:
        token = (tls_dir / "admin.token").read_text().strip()
        ca = str(tls_dir / "ca.crt")
    log_dir = root / "data" / "logs"
    for peer in peers:
        launcher.start(peer, log_dir=log_dir, cwd=root)
    try:
        print(f"qfs demo: starting {len(peers)} peers (logs in {log_dir})", file=sys.stderr)
        seconds = launcher.wait_converged(peers, CONVERGE_TIMEOUT, token, ca)
        print(f"qfs demo: all peers see each other after {seconds:.2f}s", file=sys.stderr)
        client = Client(peers[0].http_url, token, ca=ca)
        if getattr(args, "headless", False) or not sys.stdout.isatty():
            return _headless(client)
        return open_ui(client)
    except (TimeoutError, RuntimeError) as e:
        print(f"qfs: error: {e}", file=sys.stderr)
        return 1
    finally:
        print("qfs demo: stopping peers", file=sys.stderr)
        launcher.stop(peers)


def _tls_dir(peers: list[launcher.PeerProcess], root: Path) -> Path | None:
    """The one --tls-dir the Procfile's peers share (None for an --insecure demo)."""
    dirs = {
        value for peer in peers for flag, value in itertools.pairwise(peer.argv)
        if flag == "--tls-dir"
    }
    if len(dirs) > 1:
        raise ValueError(f"the Procfile's peers use several --tls-dir: {sorted(dirs)}")
    return root / dirs.pop() if dirs else None


def _prepare(tls_dir: Path, peers: list[launcher.PeerProcess],
             run_cluster: Callable[[list[str]], int]) -> bool:
    """Create what is missing of the demo's TLS folder; False if a step failed (it said why)."""
    if not (tls_dir / "ca.crt").exists():
        print(f"qfs demo: creating the demo cluster in {tls_dir}", file=sys.stderr)
        if run_cluster(["init", str(tls_dir), "--quiet"]) != 0:
            return False
    for peer in peers:
        if not (tls_dir / f"{peer.name}.crt").exists():
            addrs = list(itertools.chain.from_iterable(("--addr", a) for a in DEMO_ADDRS))
            if run_cluster(["cert", str(tls_dir), peer.name, *addrs]) != 0:
                return False
    config = tls_dir / "client.toml"
    if not config.exists():
        text = (
            "# written by qfs demo: the client reads it from the Procfile's folder\n"
            f'peer = "{peers[0].http_url}"\nca = "ca.crt"\ntoken-file = "admin.token"\n'
        )
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return True


def _headless(client: Client) -> int:
    """Print the cluster once, then wait for Ctrl-C or SIGTERM."""
    print(json.dumps(client.cluster(), indent=2))
    sys.stdout.flush()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
