"""The file manager driven by Pilot against a real 3-peer cluster on 127.0.0.1.

Each test starts its own peers (conftest.cluster), opens the TUI on the first one through the
real client library, and checks the outcome both on screen and through a separate client.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from harness import Cluster, wait_until
from screen_text import screen_text
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from peer.client.api_client import Conflict
from tui.app import QfsApp
from tui.messages import ActionDone, ListingLoaded, PeerSwitched
from tui.screens.conflict import ConflictScreen
from tui.screens.dialogs import ConfirmScreen, PromptScreen
from tui.screens.placement import PlacementScreen
from tui.widgets.file_table import FileTable
from tui.widgets.files_view import FilesView
from tui.widgets.transfers import TransferRow

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
SIZE = (140, 40)


def table(app: QfsApp) -> FileTable:
    return app.query_one("#files", FileTable)


def shown(app: QfsApp) -> set[str]:
    """Names of the rows in the file table."""
    return {str(row.key.value) for row in table(app).ordered_rows}


async def select(pilot: Pilot[int], app: QfsApp, name: str) -> None:
    """Put the table cursor on ``name`` (as arrow keys would)."""
    await wait_until(pilot, lambda: name in shown(app), what=f"{name} listed")
    files = table(app)
    files.focus()
    files.move_cursor(row=files.get_row_index(name))
    await pilot.pause()


async def answer_prompt(pilot: Pilot[int], app: QfsApp, value: str) -> None:
    """Fill the open path prompt with ``value`` and press Enter."""
    await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the prompt")
    app.screen.query_one(Input).value = value
    await pilot.press("enter")


async def test_browse_lists_tree_health_preview_and_members(cluster: Cluster) -> None:
    client = cluster.client()
    client.put("/docs/readme.md", b"# Hello quorumfs\n\nsome *text*\n")
    client.put("/data/blob.bin", os.urandom(2 << 20) + b"\0")
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: shown(app) == {"docs", "data"}, what="root listing")
        await select(pilot, app, "docs")
        await pilot.press("enter")
        await wait_until(pilot, lambda: shown(app) == {"readme.md"}, what="/docs listing")
        assert app.query_one(FilesView).directory == "/docs"
        await wait_until(
            pilot, lambda: table(app).health.get("/docs/readme.md") == (3, 3), what="health 3/3"
        )
        await wait_until(pilot, lambda: "Hello quorumfs" in screen_text(app), what="preview")
        await pilot.press("backspace")
        await wait_until(pilot, lambda: shown(app) == {"docs", "data"}, what="back at /")
        await pilot.press("enter", "down")  # into /data (sorted first), onto nothing else
        await wait_until(pilot, lambda: shown(app) == {"blob.bin"}, what="/data listing")
        await wait_until(pilot, lambda: "binary, 2.0 MiB" in screen_text(app), what="hex view")
        await wait_until(pilot, lambda: table(app).health.get("/data/blob.bin") == (3, 3))
        await pilot.press("2")
        await wait_until(pilot, lambda: "3/3 alive" in screen_text(app), what="members")
        text = screen_text(app)
        for name in ("p1", "p2", "p3"):
            assert name in text
        assert "▶  p1" in text  # the peer the TUI talks to is marked
        assert "repair  under-replicated" in text and "scrub   pass" in text  # p1's repair


async def test_upload_download_delete(cluster: Cluster, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    local = tmp_path / "payload.bin"
    local.write_bytes(data)
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub" / "b.txt").write_text("beta\n")
    check = cluster.client(1)  # a different peer than the TUI's
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.query_one(FilesView).stats == {}, what="start")
        await pilot.press("u")
        await answer_prompt(pilot, app, str(local))
        await wait_until(pilot, lambda: "payload.bin" in shown(app), what="uploaded file listed")
        assert check.get_bytes("/payload.bin") == data

        await pilot.press("u")
        await answer_prompt(pilot, app, str(folder))
        await wait_until(pilot, lambda: "album" in shown(app), what="uploaded folder listed")
        assert check.get_bytes("/album/a.txt") == b"alpha\n"
        assert check.get_bytes("/album/sub/b.txt") == b"beta\n"
        assert not app.query(TransferRow)

        target = tmp_path / "downloaded.bin"
        await select(pilot, app, "payload.bin")
        await pilot.press("d")
        await answer_prompt(pilot, app, str(target))
        await wait_until(pilot, target.exists, what="download written")
        assert target.read_bytes() == data

        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: "payload.bin" not in shown(app), what="row gone")
        assert "payload.bin" not in {e["name"] for e in check.ls("/")}


async def test_keep_one_of_two_concurrent_versions(cluster: Cluster) -> None:
    first = cluster.client(0).put("/shared.txt", b"base\n")
    cluster.client(1).put("/shared.txt", b"written via p2\n", version=first["version"])
    cluster.client(2).put("/shared.txt", b"written via p3\n", version=first["version"])
    with pytest.raises(Conflict):
        cluster.client(0).get_bytes("/shared.txt")
    messages: list[Message] = []
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await select(pilot, app, "shared.txt")
        assert (table(app).current_entry() or {}).get("conflict") is True
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConflictScreen))
        screen = app.screen
        assert isinstance(screen, ConflictScreen)
        await wait_until(pilot, lambda: screen.conflict is not None, what="siblings loaded")
        assert screen.conflict is not None
        siblings = screen.conflict.siblings
        assert len(siblings) == 2
        text = screen_text(app)
        assert "written via p2" in text and "written via p3" in text  # side by side
        chosen = cluster.client(1).get_bytes("/shared.txt", version=str(siblings[1]["version"]))
        await pilot.press("2")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConflictScreen))
        assert any(isinstance(m, ActionDone) and m.error is None for m in messages)
        assert cluster.client(2).get_bytes("/shared.txt") == chosen
        await wait_until(
            pilot, lambda: not (table(app).current_entry() or {}).get("conflict"), what="no ⚠"
        )


async def test_move_renames_the_file(cluster: Cluster) -> None:
    cluster.client().put("/old-name.txt", b"contents\n")
    messages: list[Message] = []
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await select(pilot, app, "old-name.txt")
        await pilot.press("m")
        await answer_prompt(pilot, app, "/new-name.txt")
        await wait_until(pilot, lambda: any(isinstance(m, ActionDone) for m in messages))
        done = next(m for m in messages if isinstance(m, ActionDone))
        assert done.error is None
        names = {e["name"] for e in cluster.client(1).ls("/")}
        assert "new-name.txt" in names and "old-name.txt" not in names
        await wait_until(pilot, lambda: "new-name.txt" in shown(app))
        assert cluster.client(2).get_bytes("/new-name.txt") == b"contents\n"
        assert app.is_running


async def test_failover_after_sigkill_of_the_connected_peer(cluster: Cluster) -> None:
    cluster.client().put("/survivor.txt", b"still here\n")
    messages: list[Message] = []
    first = cluster.peers[0]
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: "survivor.txt" in shown(app))
        await wait_until(pilot, lambda: "3 peers alive" in screen_text(app), what="members")
        assert first.process is not None
        first.process.kill()  # SIGKILL, by PID, of the peer the TUI talks to
        first.process.wait()
        await wait_until(
            pilot,
            lambda: any(isinstance(m, PeerSwitched) for m in messages),
            what="failover",
        )
        switched = next(m for m in messages if isinstance(m, PeerSwitched))
        assert switched.old == first.http_url
        assert switched.new in {p.http_url for p in cluster.peers[1:]}
        assert app.connection.base_url == switched.new
        await wait_until(pilot, lambda: switched.new in screen_text(app), what="status line")
        count = sum(isinstance(m, ListingLoaded) for m in messages)
        await pilot.press("r")
        await wait_until(
            pilot,
            lambda: sum(isinstance(m, ListingLoaded) for m in messages) > count,
            what="listing after failover",
        )
        last = [m for m in messages if isinstance(m, ListingLoaded)][-1]
        assert last.error is None
        assert "survivor.txt" in shown(app)


async def test_failover_when_the_connected_peer_hangs(cluster: Cluster) -> None:
    cluster.client().put("/kept.txt", b"kept\n")
    messages: list[Message] = []
    hung = cluster.peers[0]
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: "3 peers alive" in screen_text(app), what="members")
        hung.signal(signal.SIGSTOP)  # alive to the kernel, silent to the TUI
        try:
            await wait_until(
                pilot,
                lambda: any(isinstance(m, PeerSwitched) for m in messages),
                timeout=20,
                what="failover from the stopped peer",
            )
            assert app.connection.base_url != hung.http_url
            await wait_until(pilot, lambda: "kept.txt" in shown(app), what="listing")
            assert app.is_running
        finally:
            hung.signal(signal.SIGCONT)


async def test_where_are_my_bytes_flags_a_dead_holder(cluster: Cluster) -> None:
    data = os.urandom(3 << 20) + b"!"  # four 1 MiB blocks
    cluster.client().put("/blocks.bin", data)
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "blocks.bin")
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, PlacementScreen))
        blocks = app.screen.query_one("#blocks", DataTable)
        await wait_until(pilot, lambda: blocks.row_count == 4, what="four blocks")
        assert "full copies on live peers: 3/3" in screen_text(app)
        victim = cluster.peers[2]
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait()
        await wait_until(
            pilot,
            lambda: app.connection.states().get("p3") in ("suspect", "dead"),
            timeout=30,
            what="p3 no longer alive",
        )
        await pilot.press("r")
        await wait_until(
            pilot,
            lambda: "p3 (suspect)" in screen_text(app) or "p3 (dead)" in screen_text(app),
            what="p3 flagged in the placement",
        )
        assert "full copies on live peers: 3/3" not in screen_text(app)


def outcomes(messages: list[Message]) -> list[ActionDone]:
    """The ActionDone messages posted so far (the outcome of each namespace change), once each.

    The hook sees a message again at every widget it bubbles up to.
    """
    unique = {id(m): m for m in messages if isinstance(m, ActionDone)}
    return list(unique.values())


async def test_new_folder_with_parents(cluster: Cluster) -> None:
    messages: list[Message] = []
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: app.query_one(FilesView).stats == {}, what="start")
        await pilot.press("n")
        await answer_prompt(pilot, app, "projects/2026/q1")
        await wait_until(pilot, lambda: "projects" in shown(app), what="new folder listed")
        done = outcomes(messages)
        assert done and done[-1].error is None
        check = cluster.client(2)  # another peer than the TUI's
        assert check.stat("/projects/2026/q1")["type"] == "dir"
        assert [e["name"] for e in check.ls("/projects/2026")] == ["q1"]
        entry = table(app).current_entry() or {}
        assert entry.get("type") == "dir" and entry.get("mode") and entry.get("owner")


async def test_copy_shares_the_bytes(cluster: Cluster) -> None:
    data = os.urandom(2 << 20) + b"copy me"
    cluster.client().put("/orig.bin", data)
    messages: list[Message] = []
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await select(pilot, app, "orig.bin")
        await pilot.press("y")
        await answer_prompt(pilot, app, "/backup/orig-copy.bin")
        await wait_until(pilot, lambda: "backup" in shown(app), what="destination listed")
        done = outcomes(messages)
        assert done and done[-1].error is None, done
        assert "orig.bin" in shown(app)  # a copy, not a move
        assert cluster.client(1).get_bytes("/backup/orig-copy.bin") == data
        assert cluster.client(2).get_bytes("/orig.bin") == data

        await pilot.press("y")  # the same copy again: the destination exists now
        await answer_prompt(pilot, app, "/backup/orig-copy.bin")
        await wait_until(pilot, lambda: len(outcomes(messages)) == 2)
        again = outcomes(messages)[-1]
        assert again.error is not None and again.summary == "copy /orig.bin"
        assert app.is_running


async def test_chmod_sets_the_mode(cluster: Cluster) -> None:
    cluster.client().put("/secret.txt", b"hush\n")
    messages: list[Message] = []
    app = QfsApp(cluster.client())
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await select(pilot, app, "secret.txt")
        before = str((table(app).current_entry() or {}).get("mode"))
        assert before == cluster.client(1).stat("/secret.txt")["mode"]
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the prompt")
        assert app.screen.query_one(Input).value == before  # the current mode is offered
        await answer_prompt(pilot, app, "0600")
        await wait_until(pilot, lambda: outcomes(messages))
        done = outcomes(messages)[0]
        assert done.error is None, done
        assert cluster.client(2).stat("/secret.txt")["mode"] == "0600"
        await wait_until(
            pilot,
            lambda: (table(app).current_entry() or {}).get("mode") == "0600",
            what="new mode listed",
        )
        assert "0600" in screen_text(app)

        await pilot.press("p")
        await answer_prompt(pilot, app, "rwx")  # not octal: refused before any request
        await wait_until(pilot, lambda: not isinstance(app.screen, PromptScreen))
        await pilot.pause(0.2)
        assert app.is_running
        assert cluster.client(1).stat("/secret.txt")["mode"] == "0600"
