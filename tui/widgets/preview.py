"""The preview pane: highlighted text, a hex dump of binary data, or a size summary."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from peer.client.api_client import printable
from tui.format import human_size, local_time, printable_lines, shown

PREVIEW_LIMIT = 64 * 1024  # bytes of a file fetched for its preview
HEX_BYTES = 256  # bytes of a binary file shown as hex


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or bytes that are not UTF-8 (a cut multi-byte character at the end is fine)."""
    if b"\0" in data[:8192]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start < len(data) - 4
    return False


def hex_dump(data: bytes, width: int = 16) -> Text:
    """``offset  hex bytes  ascii`` lines, ``width`` bytes each (as ``hexdump -C``, narrower)."""
    text = Text(no_wrap=True, overflow="crop")
    digits = max(4, len(f"{max(len(data) - 1, 0):x}"))
    for offset in range(0, len(data), width):
        row = data[offset : offset + width]
        hexes = " ".join(f"{b:02x}" for b in row).ljust(width * 3 - 1)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        text.append(f"{offset:0{digits}x} ", style="dim")
        text.append(hexes)
        text.append(f" {ascii_}\n", style="cyan")
    return text


def hex_width(columns: int) -> int:
    """Bytes per hex line that fit in ``columns`` cells (each byte takes 4: ``xx `` and ascii)."""
    return next((n for n in (16, 8) if 5 + 4 * n <= columns), 4)


def render_preview(name: str, data: bytes, size: int, columns: int = 80) -> RenderableType:
    """What the pane shows for a file named ``name`` whose first bytes are ``data``.

    ``columns`` is the pane's width, which decides how many bytes a hex line holds.
    """
    truncated = size > len(data)
    note = Text(
        f"first {human_size(len(data))} of {human_size(size)}" if truncated else "", style="dim"
    )
    if not data:
        return Text("(empty file)", style="dim")
    if looks_binary(data):
        head = Text(f"binary, {human_size(size)}", style="bold")
        return Group(head, Text(""), hex_dump(data[:HEX_BYTES], hex_width(columns)))
    code = printable_lines(data.decode("utf-8", errors="replace"))
    lexer = Syntax.guess_lexer(name, code)
    syntax = Syntax(code, lexer, line_numbers=True, word_wrap=False, theme="ansi_dark")
    return Group(note, syntax) if truncated else syntax


def render_summary(path: str, entry: dict[str, Any]) -> Text:
    """The header of the pane: path, size, time, mode, owner and group of the selected entry."""
    text = shown(path, style="bold")
    if entry.get("type") == "dir":
        text.append("\ndirectory", style="dim")
    else:
        text.append(f"\n{human_size(entry.get('size'))}  ·  {local_time(entry.get('mtime'))}")
    if any(entry.get(key) for key in ("mode", "owner", "group")):
        owner = f"{entry.get('owner') or '-'}:{entry.get('group') or '-'}"
        text.append("\n" + printable(f"{entry.get('mode') or '-'}  {owner}"), style="dim")
    if entry.get("conflict"):
        text.append("\n⚠ concurrent versions: press c to resolve", style="bold yellow")
    return text


class Preview(VerticalScroll):
    """A header (what is selected) over a scrollable body (its content)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = Static(id="preview-head")
        self.body = Static(id="preview-body")

    def compose(self) -> ComposeResult:
        yield self.head
        yield self.body

    def show_entry(self, path: str, entry: dict[str, Any]) -> None:
        """Show what ``entry`` is while its content loads (or for good, for a directory)."""
        self.head.update(render_summary(path, entry))
        body = "" if entry.get("type") == "dir" else Text("loading…", style="dim")
        self.body.update(body)
        self.scroll_home(animate=False)

    def show_content(self, name: str, data: bytes, size: int) -> None:
        """Show the first bytes of a file."""
        # Leave room for the vertical scrollbar, which long content brings once shown.
        columns = self.scrollable_content_region.width - self.styles.scrollbar_size_vertical
        body = render_preview(name, data, size, columns)
        self.body.update(body)

    def show_error(self, message: str) -> None:
        """Say why there is nothing to show."""
        self.body.update(shown(message, style="red"))

    def clear(self) -> None:
        """Nothing selected."""
        self.head.update("")
        self.body.update("")
