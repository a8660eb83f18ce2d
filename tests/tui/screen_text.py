"""The text of a running app's screen, read from Textual's public SVG screenshot.

Text snapshots compare layout and content (not colours) and diff readably; they are stored
under ``snapshots/`` and rewritten when the test runs with ``QFS_UPDATE_SNAPSHOTS=1``.
"""

from __future__ import annotations

import difflib
import html
import os
import re
from pathlib import Path

from textual.app import App

CELL_WIDTH = 12.2  # pixels per terminal cell in Rich's SVG export (0.61 x 20px font)
_TEXT = re.compile(
    r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
    r'clip-path="url\(#[^"]*-line-(\d+)\)">([^<]*)</text>'
)
SNAPSHOTS = Path(__file__).parent / "snapshots"


def screen_text(app: App[object]) -> str:
    """Every row of the current screen as plain text, trailing spaces removed."""
    width, height = app.size
    rows = [[" "] * width for _ in range(height)]
    for x, line, text in _TEXT.findall(app.export_screenshot()):
        column = round(float(x) / CELL_WIDTH)
        for offset, char in enumerate(html.unescape(text).replace("\xa0", " ")):
            if 0 <= int(line) < height and 0 <= column + offset < width:
                rows[int(line)][column + offset] = char
    return "\n".join("".join(row).rstrip() for row in rows) + "\n"


def assert_snapshot(app: App[object], name: str) -> None:
    """The screen equals ``snapshots/<name>.txt`` (written instead when updating)."""
    actual = screen_text(app)
    stored = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("QFS_UPDATE_SNAPSHOTS") == "1" or not stored.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        stored.write_text(actual)
        if os.environ.get("QFS_UPDATE_SNAPSHOTS") != "1":
            raise AssertionError(f"no snapshot {stored.name} yet: written, check it and rerun")
        return
    expected = stored.read_text()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "stored", "rendered", lineterm=""
        )
        raise AssertionError(f"screen differs from {stored}:\n" + "\n".join(diff))
