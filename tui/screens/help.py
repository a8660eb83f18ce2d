"""The help screen: every key, grouped by what it is for."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    (
        "Navigate",
        [
            ("↑ ↓ / j k", "move in the file table"),
            ("enter / l", "open the directory under the cursor"),
            ("backspace / h", "go to the parent directory"),
            ("tab / shift+tab", "move between tree, table and preview"),
            ("1 / 2", "files tab / cluster tab"),
            ("/", "filter by name (esc clears)"),
            ("s / S", "sort by name, size, modified / reverse"),
            ("r", "refresh listing, tree and health"),
        ],
    ),
    (
        "Files",
        [
            ("u", "upload a local file or folder into this directory"),
            ("d", "download the selected file"),
            ("n", "new directory (missing parents too: a/b/c)"),
            ("m", "rename or move the selected entry"),
            ("y", "copy the selected entry (blocks are shared, not copied)"),
            ("p", "chmod: set the octal mode of the selected entry"),
            ("x / delete", "delete the selected entry (asks first)"),
            ("b", "where are my bytes: block holders of the selected file"),
            ("c", "resolve a conflict (⚠): pick the version to keep"),
        ],
    ),
    ("App", [("?", "this help"), ("q / ctrl+q", "quit")]),
)


def help_table() -> Table:
    """The key reference as one table."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for group, keys in KEYS:
        table.add_row(f"[b u]{group}[/]", "")
        for key, what in keys:
            table.add_row(key, what)
        table.add_row("", "")
    table.add_row("Mouse", "click rows, tree nodes, breadcrumbs and tabs; wheel scrolls")
    return table


class HelpScreen(ModalScreen[None]):
    """Lists the keys; any of escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static("[b]quorumfs file manager — keys[/b]\n", classes="dialog-title")
            yield Static(help_table())
