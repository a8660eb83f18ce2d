"""Pure formatting and counting helpers shared by the widgets: sizes, times, replica health,
and `shown`: the one way a string a peer sent (a name, a path, an address, an error) reaches the
screen, with control characters escaped and never read as markup."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.text import Text

from peer.client.api_client import printable

STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}
"""Colour of each membership state, wherever a peer's name or state is shown."""


def shown(value: object, style: str = "") -> Text:
    """A string from a peer as display text: control and bidi characters escaped (see
    `printable`), markup such as ``[@click=...]`` shown as typed, not interpreted."""
    return Text(printable(value), style=style)


def printable_lines(text: str) -> str:
    """Many lines of text (a file's first bytes) with `printable`'s escapes, tabs kept."""
    return "\n".join(
        "\t".join(printable(part) for part in line.split("\t")) for line in text.split("\n")
    )


def human_size(size: int | None) -> str:
    """``1536`` -> ``1.5 KiB``; None (a directory) -> empty."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def local_time(timestamp: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``, or empty when unknown."""
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def clock_time(timestamp: float) -> str:
    """A Unix time as local ``HH:MM:SS`` (the event log)."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def ago(seconds: float | None) -> str:
    """``last_heard_s`` as ``0.4s ago``; None means never (or: this is the peer itself)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s ago"
    return f"{seconds / 60:.0f}m ago"


def healthy_holders(stat: Mapping[str, Any], states: Mapping[str, str]) -> int:
    """How many live peers hold a full copy: the least-held block's live holders.

    A file stored inline (no blocks) lives in its manifest, so its manifest replicas count.
    A peer missing from ``states`` (not in the last member list) does not count as live.
    """
    blocks = stat.get("blocks") or []
    if not blocks:
        holders_per_block = [stat.get("replicas") or []]
    else:
        holders_per_block = [block.get("holders") or [] for block in blocks]
    return min(sum(states.get(h) == "alive" for h in holders) for holders in holders_per_block)


def health_style(healthy: int, n: int) -> str:
    """Green at full replication, yellow when degraded, red when nothing live holds it."""
    if healthy >= n:
        return "green"
    return "yellow" if healthy > 0 else "bold red"
