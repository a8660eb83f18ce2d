"""The transfers panel: one progress bar per running upload or download."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from tui.format import shown


class TransferRow(Horizontal):
    """One transfer: what moves, and how far it got."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = label
        self.label = Label(shown(label), classes="transfer-label")
        self.bar = ProgressBar(total=None, show_eta=True)

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.bar

    def progress(self, done: int, total: int | None) -> None:
        """Move the bar; once every byte is sent, say that the peers are still storing them."""
        self.bar.update(total=total, progress=done)
        if total is not None and done >= total:
            self.label.update(shown(f"{self.text} · waiting for the replicas"))


class TransfersPanel(Vertical):
    """Hidden while nothing is moving (the ``-active`` class shows it)."""

    def start(self, transfer_id: int, label: str) -> None:
        """Add a row for a new transfer."""
        self.mount(TransferRow(label, id=f"transfer-{transfer_id}"))
        self.add_class("-active")

    def progress(self, transfer_id: int, done: int, total: int | None) -> None:
        """Move a transfer's bar."""
        for row in self.query(f"#transfer-{transfer_id}").results(TransferRow):
            row.progress(done, total)

    def finish(self, transfer_id: int) -> None:
        """Remove a transfer's row; hide the panel when it was the last."""
        gone = f"transfer-{transfer_id}"
        for row in self.query(f"#{gone}"):
            row.remove()
        if not [row for row in self.query(TransferRow) if row.id != gone]:
            self.remove_class("-active")
