"""Snapshot tests of the main screens, RENDERING ONLY, against a FAKE client (fake_client.py).

The fake serves fixed files and members, so the screens are deterministic; what peers really
answer is covered by test_tui_cluster.py. Snapshots are text (layout and content, not colour)
under snapshots/; set QFS_UPDATE_SNAPSHOTS=1 to rewrite them after an intended change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fake_client import FakeClient, FakeWorld, sample_world
from harness import wait_until
from rich.text import Text
from screen_text import assert_snapshot, screen_text
from textual.pilot import Pilot
from textual.widgets._footer import FooterKey

from tui.app import QfsApp
from tui.screens.conflict import ConflictScreen
from tui.screens.placement import PlacementScreen
from tui.widgets.file_table import FileTable

pytestmark = pytest.mark.anyio
SIZE = (120, 36)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times render in UTC whatever the machine's zone, so snapshots match everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_app(world: FakeWorld | None = None) -> QfsApp:
    return QfsApp(FakeClient(world or sample_world()), clock=lambda: 0.0)  # type: ignore[arg-type]


def files(app: QfsApp) -> FileTable:
    return app.query_one("#files", FileTable)


async def settled(pilot: Pilot[int], app: QfsApp, directory: str = "/") -> None:
    """Wait until the listing of ``directory``, the health of its files and the footer are shown."""
    await wait_until(pilot, lambda: app.screen_stack[0].query(FooterKey), what="footer keys")
    table = files(app)
    await wait_until(pilot, lambda: table.directory == directory and table.row_count > 0)
    wanted = [table.path_of(e) for e in table.entries if e["type"] != "dir"]
    await wait_until(pilot, lambda: all(p in table.health for p in wanted), what="health")
    await pilot.pause(0.1)


async def test_files_root() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert_snapshot(app, "files_root")


async def test_files_text_preview_is_highlighted() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("down", "enter")  # into /src
        await settled(pilot, app, "/src")
        await wait_until(pilot, lambda: "def main" in screen_text(app), what="preview")
        await pilot.pause(0.2)
        assert_snapshot(app, "files_src_preview")


async def test_files_binary_preview_is_hex() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("enter")  # into /photos
        await settled(pilot, app, "/photos")
        await pilot.pause(0.2)
        assert_snapshot(app, "files_photos_hex")


async def test_cluster_tab() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("2")
        await pilot.pause(0.2)
        assert_snapshot(app, "cluster")


async def test_conflict_dialog() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        files(app).move_cursor(row=files(app).get_row_index("notes.txt"))
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConflictScreen))
        await wait_until(pilot, lambda: len(app.screen.query(".sibling")) == 2)
        await pilot.pause(0.2)
        assert_snapshot(app, "conflict")


async def test_placement_dialog() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        files(app).move_cursor(row=files(app).get_row_index("big.bin"))
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, PlacementScreen))
        await wait_until(pilot, lambda: app.screen.query_one("#blocks").row_count == 3)
        await pilot.pause(0.2)
        assert_snapshot(app, "placement")


async def test_help() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert_snapshot(app, "help")


async def test_no_live_peer() -> None:
    world = sample_world()
    world.down = {m["http"] for m in world.members}
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "no live peer" in str(app.status.render()))
        await wait_until(pilot, lambda: app.query(FooterKey), what="footer keys")
        await pilot.pause(0.2)
        assert_snapshot(app, "no_live_peer")


def styles_of(text: Text, fragment: str) -> set[str]:
    """The styles of the spans covering the first occurrence of ``fragment`` in ``text``."""
    start = text.plain.index(fragment)
    end = start + len(fragment)
    return {str(s.style) for s in text.spans if s.start <= start and s.end >= end}


async def test_repair_panel_and_attribute_columns() -> None:
    world = sample_world()
    assert world.repair is not None
    world.repair.update(
        under_replicated=0,
        last_round_s=None,
        corrupt_blocks_found=2,
        corrupt_blocks_repaired=1,
        gc_last_skip="p3 is not alive",
    )
    app = make_app(world)
    async with app.run_test(size=(170, 36)) as pilot:  # wide enough for every column
        await settled(pilot, app)
        lines = screen_text(app).splitlines()[4:10]
        cells = [line.split("▕", 1)[1].split("▏", 1)[0] for line in lines]  # the table's part
        rows = {cell.split()[0].strip("▸⚠") or cell.split()[1]: cell for cell in cells}
        assert rows["README.md"].split()[-3:] == ["0644", "alice", "staff"]
        assert rows["photos/"].split()[-3:] == ["0755", "alice", "family"]
        assert rows["big.bin"].split()[-3:] == ["-", "-", "-"]  # listed without them
        await pilot.press("2")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "under-replicated 0" in text and "anti-entropy 14 rounds, last never" in text
        assert "corrupt 2 found / 1 repaired" in text and "(last skipped: p3 is not alive)" in text
        panel = app.cluster_view.repair.content
        assert isinstance(panel, Text)
        assert styles_of(panel, "0") == {"green"}  # nothing under-replicated
        assert "bold red" in styles_of(panel, "2 found / 1 repaired")

        world.repair["under_replicated"] = 5
        await wait_until(pilot, lambda: "under-replicated 5" in screen_text(app), what="refresh")
        panel = app.cluster_view.repair.content
        assert isinstance(panel, Text)
        assert styles_of(panel, "5") == {"bold yellow"}

        world.repair = None  # a peer that does not report repair activity
        await wait_until(pilot, lambda: "not reported by this peer" in screen_text(app))


async def test_names_from_peers_are_shown_escaped_never_interpreted() -> None:
    world = sample_world()
    world.members[2]["name"] = "p3\x1b]0;owned\x07[@click=app.quit]q[/]"
    world.members[2]["http"] = "http://127.0.0.1:8003\x1b[2J"
    world.add_file("/e\x1b[2J[b]x", b"hello\x1b[31m red\n")
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        files(app).move_cursor(row=files(app).get_row_index("e\x1b[2J[b]x"))
        await pilot.pause(0.3)
        listing = screen_text(app)
        await pilot.press("2")
        await pilot.pause(0.2)
        cluster = screen_text(app)
    assert "e\\x1b[2J[b]x" in listing  # table and preview head, brackets as sent
    assert "hello\\x1b[31m red" in listing  # the preview of the content
    assert "p3\\x1b]0;owned\\x07[@click=app.quit]q[/]" in cluster  # table and event log
    assert "http://127.0.0.1:8003\\x1b[2J" in cluster
    assert "\x1b" not in listing + cluster and "\x07" not in cluster
