"""The current remote path as clickable segments: ``/ ▸ photos ▸ 2024``."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from peer.client.api_client import printable
from tui.messages import OpenDirectory


def ancestors(path: str) -> list[tuple[str, str]]:
    """``/a/b`` -> ``[("/", "/"), ("a", "/a"), ("b", "/a/b")]``: (label, path) per segment."""
    crumbs = [("/", "/")]
    prefix = ""
    for segment in (s for s in path.split("/") if s):
        prefix += "/" + segment
        crumbs.append((segment, prefix))
    return crumbs


class Breadcrumbs(Static):
    """Shows a path; clicking a segment posts OpenDirectory for it."""

    def __init__(self, path: str = "/", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._crumbs = ancestors(path)
        self.show(path)

    def show(self, path: str) -> None:
        """Display ``path``."""
        self._crumbs = ancestors(path)
        parts = []
        for index, (label, _) in enumerate(self._crumbs):
            parts.append(
                Content.from_markup(f"[@click=go({index})]$label[/]", label=printable(label))
            )
        self.update(Content(" ▸ ").join(parts))

    def action_go(self, index: int) -> None:
        self.post_message(OpenDirectory(self._crumbs[index][1]))
