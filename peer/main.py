"""The ``qfs`` program: the client commands of peer.client.cli, joined to the node and the TUI.

``qfs peer`` runs a node (peer.config, peer.node), ``qfs cluster`` makes a cluster's CA, keys
and certificates (peer.cluster_setup), and ``qfs tui`` / ``qfs demo`` open the file manager
(tui.app); everything else is a client of the HTTP API. This is the one module where the
client side meets the node and the TUI, and each is imported only when its command runs, so
``qfs put`` loads neither Twisted nor Textual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from peer.allocator import CLIENT_BUFFER, keep_buffers_in_heap
from peer.client import cli
from peer.client.api_client import Client


def run_peer(argv: list[str]) -> int:
    """``qfs peer ...``: parse the peer's own flags (peer.config) and run it until SIGTERM."""
    from peer.config import ConfigError, add_peer_arguments, config_from_args

    parser = cli.UsageParser(prog="qfs peer", description="Run one quorumfs peer until SIGTERM.")
    add_peer_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        cli.fail(f"bad peer configuration: {exc}")
        return cli.EXIT_USAGE
    from peer.node import run_peer as run_node

    return run_node(config)


def run_cluster(argv: list[str]) -> int:
    """``qfs cluster ...``: a secure cluster's CA, keys and certificates (peer.cluster_setup)."""
    from peer.cluster_setup import add_cluster_commands, run_cluster_command

    parser = cli.UsageParser(
        prog="qfs cluster", description="Create a secure cluster's CA, keys and certificates."
    )
    add_cluster_commands(parser)
    return run_cluster_command(parser.parse_args(argv))


def open_ui(client: Client) -> int:
    """The terminal file manager on `client`, until the user quits."""
    from tui.app import run_tui

    return run_tui(client)


PROGRAMS = cli.Programs(run_peer=run_peer, open_ui=open_ui, run_cluster=run_cluster)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``qfs`` console script; returns the exit status."""
    keep_buffers_in_heap(CLIENT_BUFFER)  # a peer tunes again for its own block size
    return cli.main(argv, PROGRAMS)


if __name__ == "__main__":
    sys.exit(main())
