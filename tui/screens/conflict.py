"""Conflict resolution: concurrent versions of one file side by side; the user keeps one.

Keeping a sibling reads it with ``get(version=V)`` and writes it back with
``put(..., version=<the conflict's context>)``, which supersedes every sibling.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from peer.client.api_client import Client, Conflict, QfsError, printable
from tui.connection import Connection
from tui.format import human_size, local_time, printable_lines, shown
from tui.messages import ActionDone
from tui.reads import conflict_of, read_head
from tui.widgets.preview import looks_binary

SNIPPET_BYTES = 2048  # bytes of each sibling shown to help choose


@dataclass
class SiblingsLoaded(Message):
    """The conflict found (None: the file has one version now) and each sibling's first bytes."""

    conflict: Conflict | None
    heads: list[bytes]
    error: str | None = None


def sibling_card(index: int, sibling: dict[str, Any], head: bytes) -> Text:
    """The description of one sibling: who wrote it, when, how big, how it starts."""
    text = Text(f"Version {index}\n", style="bold")
    rows = [
        ("written by", str(sibling.get("writer") or "unknown peer")),
        ("modified", local_time(sibling.get("mtime")) or "unknown"),
        ("size", human_size(sibling.get("size"))),
        ("blake3", str(sibling.get("blake3", ""))[:16]),
        ("version", str(sibling.get("version", ""))[:16]),
    ]
    for key, value in rows:
        text.append(f"{key:>10}  ", style="dim")
        text.append(printable(value) + "\n")
    text.append("\n")
    if looks_binary(head):
        text.append(f"(binary, starts {head[:16].hex()})", style="dim")
    else:
        text.append(printable_lines(head.decode("utf-8", errors="replace")))
    return text


def keep_sibling(client: Client, path: str, sibling_version: str, context: str) -> dict[str, Any]:
    """Make ``sibling_version`` the one version of ``path``; the put's JSON answer."""
    with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
        client.get(path, spool, version=sibling_version)  # type: ignore[arg-type]
        spool.seek(0)
        return client.put(path, spool, version=context)  # type: ignore[arg-type]


class ConflictScreen(ModalScreen[bool]):
    """Dismisses with True once a version was kept, False when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(False)", "Cancel"),
        *(Binding(str(i), f"keep({i})", f"Keep {i}", show=i <= 3) for i in range(1, 10)),
    ]

    def __init__(self, connection: Connection, path: str) -> None:
        super().__init__()
        self.connection = connection
        self.path = path
        self.conflict: Conflict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(shown(f"Concurrent versions of {self.path}"), classes="dialog-title")
            yield Static("reading the versions…", id="conflict-status")
            yield Horizontal(id="siblings")
            yield Label(
                "Press a version's number (or click Keep) to keep it; Esc cancels",
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="conflict-load", description="reading siblings")
    def load(self) -> None:
        """Find the siblings and read the head of each."""
        try:
            conflict = self.connection.call(lambda c: conflict_of(c, self.path))
            heads = []
            for sibling in conflict.siblings if conflict else []:
                version = str(sibling["version"])
                heads.append(
                    self.connection.call(
                        lambda c, v=version: read_head(c, self.path, SNIPPET_BYTES, v)
                    )
                )
            self.post_message(SiblingsLoaded(conflict, heads))
        except QfsError as error:
            self.post_message(SiblingsLoaded(None, [], str(error)))

    def on_siblings_loaded(self, message: SiblingsLoaded) -> None:
        status = self.query_one("#conflict-status", Static)
        if message.error is not None:
            status.update(shown(f"cannot read the versions: {message.error}", style="red"))
            return
        self.conflict = message.conflict
        if message.conflict is None:
            status.update("This file has a single version now: nothing to resolve.")
            return
        count = len(message.conflict.siblings)
        status.update(f"{count} versions were written concurrently. Keep one:")
        row = self.query_one("#siblings", Horizontal)
        for index, (sibling, head) in enumerate(
            zip(message.conflict.siblings, message.heads, strict=True), start=1
        ):
            card = VerticalScroll(
                Static(sibling_card(index, sibling, head)),
                Button(f"Keep {index}", id=f"keep-{index}", variant="primary"),
                classes="sibling",
            )
            row.mount(card)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id and event.button.id.startswith("keep-"):
            self.action_keep(int(event.button.id.removeprefix("keep-")))

    def action_keep(self, index: int) -> None:
        if self.conflict is None or not 1 <= index <= len(self.conflict.siblings):
            return
        self.query_one("#conflict-status", Static).update(f"keeping version {index}…")
        self.resolve(self.conflict, index)

    @work(thread=True, exclusive=True, group="conflict-keep", description="keeping a sibling")
    def resolve(self, conflict: Conflict, index: int) -> None:
        """Write sibling ``index`` back over all of them."""
        version = str(conflict.siblings[index - 1]["version"])
        try:
            self.connection.call(lambda c: keep_sibling(c, self.path, version, conflict.version))
        except QfsError as error:
            self.post_message(ActionDone(f"keep version {index} of {self.path}", str(error)))
            return
        self.post_message(ActionDone(f"kept version {index} of {self.path}"))

    def on_action_done(self, message: ActionDone) -> None:
        message.stop()
        if message.error is None:
            self.app.notify(message.summary)
            self.dismiss(True)
        else:
            self.query_one("#conflict-status", Static).update(
                shown(f"{message.summary} failed: {message.error}", style="red")
            )
