"""Small modal dialogs: a yes/no confirmation and a one-line path prompt."""

from __future__ import annotations

import os
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label

from tui.format import shown


class LocalPathSuggester(Suggester):
    """Completes a local path with the first matching name in its directory (``~`` works)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        head, tail = os.path.split(value)
        folder = os.path.expanduser(head or ".")
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return None
        for name in names:
            if name.startswith(tail) and name != tail and (tail or not name.startswith(".")):
                suffix = "/" if os.path.isdir(os.path.join(folder, name)) else ""
                return os.path.join(head, name) + suffix
        return None


class PathInput(Input):
    """An Input where Tab takes the completion shown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "cursor_right", "Complete", show=False),
    ]


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(shown(self.question), classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PromptScreen(ModalScreen[str | None]):
    """Asks for one line (a path); dismisses with it, or None when cancelled.

    ``local`` turns on completion of local paths (Tab or → takes it). A proposed ``value``
    with characters that are not printable (a name a peer sent) is not proposed: the input
    line would show it raw.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", *, local: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.value = value if value.isprintable() else ""
        self.local = local

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(shown(self.title_text), classes="dialog-title")
            yield PathInput(
                self.value,
                suggester=LocalPathSuggester() if self.local else None,
                id="prompt-input",
            )
            yield Label("Enter to accept, Esc to cancel", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
