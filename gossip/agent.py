"""A standalone gossip agent: one member on 127.0.0.1 printing membership events as JSON lines.

``python -m gossip agent --name N --port P [--join HOST:PORT]... [--probe-interval SECONDS]
[--cluster-key-file F]``: UDP and TCP on port P; one line per event
``{"t": unix_time, "member": name, "state": "alive|suspect|dead|left", "incarnation": n}``.
SIGTERM leaves the cluster gracefully, then exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from gossip.membership import Config, MemberChanged
from gossip.service import GossipService
from gossip.transport import StreamServerFactory
from gossip.wire import Codec, WireError, load_cluster_key

HOST = "127.0.0.1"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _print_event(e: MemberChanged) -> None:
    m = e.member
    line = {"t": round(time.time(), 6), "member": m.name, "state": m.state,
            "incarnation": m.incarnation}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def parser() -> argparse.ArgumentParser:
    """The ``agent`` command's arguments."""
    ap = argparse.ArgumentParser(prog="python -m gossip agent", description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--join", type=_host_port, action="append", default=[], metavar="HOST:PORT")
    ap.add_argument("--probe-interval", type=float, default=1.0, metavar="SECONDS",
                    help="protocol period; probe timeout and gossip interval scale with it")
    ap.add_argument("--cluster-key-file", metavar="F")
    return ap


def main(argv: list[str]) -> int:
    """Run an agent until SIGTERM or SIGINT."""
    args = parser().parse_args(argv)
    if args.probe_interval <= 0:
        print("error: --probe-interval must be positive", file=sys.stderr)
        return 2
    try:
        key = load_cluster_key(args.cluster_key_file) if args.cluster_key_file else None
    except WireError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    r: Any = reactor
    p = args.probe_interval
    config = Config(probe_interval=p, probe_timeout=p / 2, gossip_interval=p / 5)
    codec = Codec(key)
    service = GossipService(args.name, uuid.uuid4().hex, HOST, args.port, (HOST, 0), args.join,
                            codec=codec, reactor=r, config=config)
    service.subscribe(_print_event)
    try:
        r.listenTCP(args.port, StreamServerFactory(codec, service.handle_stream_message, r),
                    interface=HOST)
        service.startService()
    except Exception as e:  # e.g. the port is taken
        print(f"error: {e}", file=sys.stderr)
        return 1
    # Twisted stops the reactor on SIGTERM/SIGINT; leave gracefully before it shuts down.
    r.addSystemEventTrigger(
        "before", "shutdown", lambda: service.leave().addCallback(lambda _: service.stopService()))
    r.run()
    return 0
