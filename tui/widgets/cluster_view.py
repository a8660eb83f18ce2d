"""The cluster tab: the members table, the quorum settings and the log of membership events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Static

from tui.format import STATE_STYLES, ago, clock_time, human_size
from tui.membership import member_events

COLUMNS = ("", "Name", "State", "Incarnation", "Gossip/RPC", "HTTP", "Last heard")


class ClusterView(Vertical):
    """Shows each cluster snapshot; the peer the TUI talks to is marked with ``▶``.

    ``clock`` stamps the event log (tests pass a fixed one).
    """

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._previous: list[dict[str, Any]] | None = None
        self.summary = Static("waiting for the first membership answer…", id="cluster-summary")
        self.members = DataTable[Any](id="members", cursor_type="row", zebra_stripes=True)
        self.events = RichLog(id="events", wrap=True, max_lines=1000)

    def compose(self) -> ComposeResult:
        yield self.summary
        yield self.members
        yield Static("Membership events", id="events-title")
        yield self.events

    def on_mount(self) -> None:
        self.members.add_columns(*COLUMNS)

    def show(self, url: str, cluster: dict[str, Any]) -> None:
        """Display one snapshot from the peer at ``url`` and log what changed since the last."""
        members = list(cluster.get("members") or [])
        me = cluster.get("self")
        table = self.members
        row = table.cursor_row
        table.clear()
        for member in members:
            state = member.get("state", "?")
            marker = Text("▶", style="bold") if member.get("name") == me else ""
            table.add_row(
                marker,
                Text(member.get("name", "?"), style="bold" if marker else ""),
                Text(state, style=STATE_STYLES.get(state, "")),
                str(member.get("incarnation", "")),
                member.get("addr", ""),
                member.get("http", ""),
                ago(member.get("last_heard_s")),
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1), animate=False)
        config = cluster.get("config") or {}
        alive = sum(m.get("state") == "alive" for m in members)
        summary = (
            f"talking to [b]{me}[/b] at {url}  ·  {alive}/{len(members)} alive  ·  "
            f"N={config.get('n', '?')} R={config.get('r', '?')} W={config.get('w', '?')}  ·  "
            f"block {human_size(config.get('block_size'))}"
        )
        self.summary.update(summary)
        self.log_events(member_events(self._previous, members))
        self._previous = members

    def log_events(self, lines: list[str]) -> None:
        """Append lines to the event log, each stamped with the time."""
        stamp = clock_time(self._clock())
        for line in lines:
            self.events.write(Text.assemble((stamp + "  ", "dim"), line))

    def show_unreachable(self, error: str) -> None:
        """No peer answered: say so above the (stale) table."""
        self.summary.update(Text(f"no live peer: {error}; retrying every second", style="bold red"))
