"""Where are my bytes: for one file, the peers holding each block, coloured by their state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from peer.client.api_client import QfsError, printable
from tui.connection import Connection
from tui.format import STATE_STYLES, health_style, healthy_holders, human_size, shown


@dataclass
class PlacementLoaded(Message):
    """The stat of the file and the member states at that moment, or the error."""

    stat: dict[str, Any] | None
    states: dict[str, str]
    n: int
    error: str | None = None


def peer_names(names: list[str], states: dict[str, str]) -> Text:
    """Peer names, each in its state's colour; dead or suspect ones flagged in words too."""
    text = Text()
    for i, name in enumerate(names):
        state = states.get(name, "unknown")
        if i:
            text.append("  ")
        text.append(printable(name), style=STATE_STYLES.get(state, "magenta"))
        if state != "alive":
            text.append(f" ({printable(state)})", style=STATE_STYLES.get(state, "magenta"))
    return text


def placement_summary(stat: dict[str, Any], states: dict[str, str], n: int) -> Text:
    """Size, hash, manifest replicas and the overall health line."""
    healthy = healthy_holders(stat, states)
    text = Text.assemble(
        (printable(stat.get("path", "")), "bold"),
        f"  {human_size(stat.get('size'))}  ·  blake3 {printable(stat.get('blake3', '-'))[:16]}\n",
        "manifest replicas: ",
        peer_names(list(stat.get("replicas") or []), states),
        "\nfull copies on live peers: ",
        (f"{healthy}/{n}", health_style(healthy, n)),
    )
    if stat.get("inline"):
        text.append("\nstored inline in the manifest (no separate blocks)", style="dim")
    return text


class PlacementScreen(ModalScreen[None]):
    """A table of blocks: index, hash, size, holders (live ones counted out of N)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, connection: Connection, path: str, n: int) -> None:
        super().__init__()
        self.connection = connection
        self.path = path
        self.n = n

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(shown(f"Where are the bytes of {self.path}?"), classes="dialog-title")
            yield Static("asking the peers…", id="placement-summary")
            yield DataTable(id="blocks", cursor_type="row", zebra_stripes=True)
            yield Label("r refreshes, Esc closes", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#blocks", DataTable).add_columns("#", "Block (blake3)", "Size", "Holders")
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="placement", description="stat for placement")
    def load(self) -> None:
        """Stat the file (the peer asks every up peer which blocks it holds)."""
        try:
            stat = self.connection.call(lambda c: c.stat(self.path))
        except QfsError as error:
            self.post_message(PlacementLoaded(None, {}, self.n, str(error)))
            return
        self.post_message(PlacementLoaded(stat, self.connection.states(), self.n))

    def on_placement_loaded(self, message: PlacementLoaded) -> None:
        summary = self.query_one("#placement-summary", Static)
        if message.stat is None:
            summary.update(shown(f"cannot stat {self.path}: {message.error}", style="red"))
            return
        summary.update(placement_summary(message.stat, message.states, message.n))
        table = self.query_one("#blocks", DataTable)
        table.clear()
        for index, block in enumerate(message.stat.get("blocks") or []):
            holders = list(block.get("holders") or [])
            live = sum(message.states.get(h) == "alive" for h in holders)
            table.add_row(
                str(index),
                shown(str(block.get("hash", "-"))[:20] + "…"),
                human_size(block.get("size")),
                Text.assemble(
                    (f"{live}/{message.n}  ", health_style(live, message.n)),
                    peer_names(holders, message.states),
                ),
            )
