"""`qfs demo`: start the Procfile's peers in the background, wait until they all see each other,
open the file manager on them, and stop them on exit."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from peer.client import launcher
from peer.client.api_client import Client

CONVERGE_TIMEOUT = 60.0


def run_demo(args: argparse.Namespace, open_ui: Callable[[Client], int]) -> int:
    """Run the demo cluster, with `open_ui` (the file manager) on its first peer unless
    headless; returns the exit status."""
    procfile = Path(getattr(args, "procfile", None) or "Procfile")
    if not procfile.is_file():
        print(f"qfs: error: no Procfile at {procfile.resolve()}", file=sys.stderr)
        return 2
    peers = launcher.read_procfile(procfile)
    log_dir = procfile.resolve().parent / "data" / "logs"
    for peer in peers:
        launcher.start(peer, log_dir=log_dir, cwd=procfile.resolve().parent)
    try:
        print(f"qfs demo: starting {len(peers)} peers (logs in {log_dir})", file=sys.stderr)
        seconds = launcher.wait_converged(peers, CONVERGE_TIMEOUT)
        print(f"qfs demo: all peers see each other after {seconds:.2f}s", file=sys.stderr)
        client = Client(peers[0].http_url)
        if getattr(args, "headless", False) or not sys.stdout.isatty():
            return _headless(client)
        return open_ui(client)
    except (TimeoutError, RuntimeError) as e:
        print(f"qfs: error: {e}", file=sys.stderr)
        return 1
    finally:
        print("qfs demo: stopping peers", file=sys.stderr)
        launcher.stop(peers)


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
