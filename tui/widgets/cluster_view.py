"""The cluster tab: the quorum settings, the repair activity of the peer talked to, the members
table and the log of membership events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Static

from peer.client.api_client import printable
from tui.format import STATE_STYLES, ago, clock_time, human_size, shown
from tui.membership import member_events

COLUMNS = ("", "Name", "State", "Incarnation", "Gossip/RPC", "HTTP", "Last heard")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def repair_summary(repair: dict[str, Any] | None) -> Text:
    """Three lines on the background repair of one peer (the ``repair`` object of its cluster()).

    Under-replicated records and unrepaired corrupt blocks are highlighted: they are what
    needs attention.
    """
    if not repair:
        return Text("repair activity: not reported by this peer", style="dim")
    under = repair.get("under_replicated")
    found, fixed = repair.get("corrupt_blocks_found"), repair.get("corrupt_blocks_repaired")
    last = repair.get("last_round_s")
    text = Text.assemble(
        ("repair ", "bold"),
        " under-replicated ",
        (_count(under), "bold yellow" if isinstance(under, int) and under > 0 else "green"),
        f"  ·  hints pending {_count(repair.get('hints_pending'))}",
        f"  ·  anti-entropy {_count(repair.get('anti_entropy_rounds'))} rounds, last ",
        "never" if last is None else ago(last),
        f"\n        moved {human_size(repair.get('bytes_moved') or 0)}",
        f"  ·  {_count(repair.get('records_repaired'))} records and "
        f"{_count(repair.get('blocks_repaired'))} blocks repaired",
        f"  ·  {_count(repair.get('handed_over'))} hints handed over",
        ("\nscrub  ", "bold"),
        f" pass {_count(repair.get('scrub_passes'))} at block "
        f"{_count(repair.get('scrub_position'))}, "
        f"{_count(repair.get('scrub_blocks_verified'))} verified  ·  corrupt ",
        (
            f"{_count(found)} found / {_count(fixed)} repaired",
            "bold red" if isinstance(found, int) and found > (fixed or 0) else "",
        ),
        f"  ·  GC {_count(repair.get('gc_blocks_removed'))} blocks, "
        f"{_count(repair.get('gc_tombstones_purged'))} tombstones removed",
    )
    if skip := repair.get("gc_last_skip"):
        text.append(f" (last skipped: {printable(skip)})", style="yellow")
    return text


class ClusterView(Vertical):
    """Shows each cluster snapshot; the peer the TUI talks to is marked with ``▶``.

    ``clock`` stamps the event log (tests pass a fixed one).
    """

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._previous: list[dict[str, Any]] | None = None
        self.summary = Static("waiting for the first membership answer…", id="cluster-summary")
        self.repair = Static("", id="repair")
        self.members = DataTable[Any](id="members", cursor_type="row", zebra_stripes=True)
        self.events = RichLog(id="events", wrap=True, max_lines=1000)

    def compose(self) -> ComposeResult:
        yield self.summary
        yield self.repair
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
                shown(member.get("name", "?"), style="bold" if marker else ""),
                shown(state, style=STATE_STYLES.get(state, "")),
                shown(member.get("incarnation", "")),
                shown(member.get("addr", "")),
                shown(member.get("http", "")),
                ago(member.get("last_heard_s")),
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1), animate=False)
        config = cluster.get("config") or {}
        alive = sum(m.get("state") == "alive" for m in members)
        summary = Text.assemble(
            "talking to ",
            (printable(me), "bold"),
            f" at {printable(url)}  ·  {alive}/{len(members)} alive  ·  ",
            printable(
                f"N={config.get('n', '?')} R={config.get('r', '?')} W={config.get('w', '?')}"
            ),
            f"  ·  block {human_size(config.get('block_size'))}",
        )
        self.summary.update(summary)
        self.repair.update(repair_summary(cluster.get("repair")))
        self.log_events(member_events(self._previous, members))
        self._previous = members

    def log_events(self, lines: list[str]) -> None:
        """Append lines to the event log, each stamped with the time."""
        stamp = clock_time(self._clock())
        for line in lines:
            self.events.write(Text.assemble((stamp + "  ", "dim"), printable(line)))

    def show_unreachable(self, error: str) -> None:
        """No peer answered: say so above the (stale) table."""
        self.summary.update(
            shown(f"no live peer: {error}; retrying every second", style="bold red")
        )
