"""Keyboard and mouse flows of the file manager against a FAKE client (fake_client.py).

The fake stands in for the peers so these run in well under a second each; they check the
interface's behaviour (filter, sort, dialogs, mouse, failover messages), not the peers'.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_client import FakeClient, FakeWorld, sample_world
from harness import wait_until
from screen_text import screen_text
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.widgets import Input

from tui.app import QfsApp
from tui.messages import ActionDone, PeerSwitched
from tui.screens.dialogs import PromptScreen
from tui.screens.help import HelpScreen

pytestmark = pytest.mark.anyio
SIZE = (120, 36)


def make_app(world: FakeWorld) -> QfsApp:
    return QfsApp(FakeClient(world))  # type: ignore[arg-type]


def names(app: QfsApp) -> list[str]:
    return [str(row.key.value) for row in app.files.table.ordered_rows]


async def test_filter_and_sort() -> None:
    app = make_app(sample_world())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(names(app)) == 5)
        assert names(app) == ["photos", "src", "big.bin", "notes.txt", "README.md"]
        await pilot.press("slash", "r", "e", "a", "d")
        assert names(app) == ["README.md"]
        await pilot.press("escape")
        assert len(names(app)) == 5 and app.focused is app.files.table
        await pilot.press("s")  # size
        assert names(app)[2:] == ["notes.txt", "README.md", "big.bin"]
        await pilot.press("S")  # descending
        assert names(app)[2:] == ["big.bin", "README.md", "notes.txt"]


async def test_mouse_row_and_breadcrumb() -> None:
    app = make_app(sample_world())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "src" in names(app))
        row = names(app).index("src")
        await pilot.click("#files", offset=(4, row + 1))  # highlight
        await pilot.click("#files", offset=(4, row + 1))  # a second click opens
        await wait_until(pilot, lambda: names(app) == ["main.py", "util.py"], what="/src")
        tree = app.files.dir_tree
        await wait_until(pilot, lambda: tree.cursor_node and tree.cursor_node.data == "/src")
        await pilot.click("#crumbs", offset=(0, 0))  # the "/" segment
        await wait_until(pilot, lambda: app.files.directory == "/", what="back to /")


async def test_move_without_server_support_is_reported_not_raised() -> None:
    world = sample_world()
    world.move_supported = False
    messages: list[Message] = []
    app = make_app(world)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: "README.md" in names(app))
        app.files.table.move_cursor(row=names(app).index("README.md"))
        await pilot.press("m")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one(Input).value = "/renamed.md"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(isinstance(m, ActionDone) for m in messages))
        done = next(m for m in messages if isinstance(m, ActionDone))
        assert done.error is not None and "does not support it yet" in done.error
        assert "/README.md" in world.files


async def test_failover_and_recovery_are_shown() -> None:
    world = sample_world()
    messages: list[Message] = []
    app = make_app(world)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: "2/3 peers alive" in screen_text(app))
        world.down.add("http://127.0.0.1:8001")
        await wait_until(pilot, lambda: any(isinstance(m, PeerSwitched) for m in messages))
        await wait_until(pilot, lambda: "● p2 http://127.0.0.1:8002" in screen_text(app))
        world.down = {m["http"] for m in world.members}
        await wait_until(pilot, lambda: "no live peer" in screen_text(app), what="outage shown")
        world.down.clear()
        await wait_until(pilot, lambda: "● p2" in screen_text(app), what="recovery shown")


async def test_keys_inside_dialogs_stay_there() -> None:
    app = make_app(sample_world())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(names(app)) == 5)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("2", "1")  # tab keys do nothing while a dialog is open
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("2")
        assert app.tabs.active == "cluster-tab" and app.focused is app.cluster_view.members
        await pilot.press("1")
        assert app.tabs.active == "files-tab" and app.focused is app.files.table


def record_notifications(app: QfsApp) -> list[tuple[str, str]]:
    """(message, severity) of every notification the app shows from now on."""
    seen: list[tuple[str, str]] = []
    show = app.notify

    def notify(message: str, *, severity: SeverityLevel = "information", **kwargs: Any) -> None:
        seen.append((str(message), severity))
        show(message, severity=severity, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return seen


async def test_copy_and_chmod_errors_are_notified_not_raised() -> None:
    world = sample_world()
    app = make_app(world)
    notifications = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "README.md" in names(app))
        app.files.table.move_cursor(row=names(app).index("README.md"))
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert app.screen.query_one(Input).value == "0644"  # the listed mode
        app.screen.query_one(Input).value = "0o999"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(s == "error" for _, s in notifications))
        assert "bad mode" in notifications[-1][0]
        assert not any(op == "chmod" for op, _ in world.calls)  # refused before a request

        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one(Input).value = "notes.txt"  # relative: into this directory
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: any("copy /README.md failed" in m for m, _ in notifications)
        )
        assert notifications[-1][1] == "error"
        assert world.files["/notes.txt"] == b"version A\n"
        assert app.is_running


async def test_copy_and_chmod_through_the_fake() -> None:
    world = sample_world()
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "README.md" in names(app))
        app.files.table.move_cursor(row=names(app).index("README.md"))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one(Input).value = "README.copy"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "README.copy" in names(app), what="copy listed")
        assert world.files["/README.copy"] == world.files["/README.md"]
        app.files.table.move_cursor(row=names(app).index("README.copy"))
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one(Input).value = "640"
        await pilot.press("enter")
        await wait_until(pilot, lambda: world.attrs.get("/README.copy", {}).get("mode") == "0640")
        await wait_until(
            pilot, lambda: (app.files.table.current_entry() or {}).get("mode") == "0640"
        )
