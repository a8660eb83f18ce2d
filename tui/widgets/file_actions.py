"""The file actions of the files tab: upload, download, delete, move, copy, chmod, new directory,
and the placement and conflict dialogs, each on the selected entry.

A mixin of FilesView (which supplies the widgets and the Connection named below); transfers and
namespace changes run in workers and report back with messages.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.widget import Widget
from textual.worker import get_current_worker

from peer.client.api_client import Client, ProgressFn, QfsError, format_mode
from tui import transfer
from tui.connection import Connection
from tui.format import human_size
from tui.messages import ActionDone, TransferFinished, TransferProgress
from tui.screens.conflict import ConflictScreen
from tui.screens.dialogs import ConfirmScreen, PromptScreen
from tui.screens.placement import PlacementScreen
from tui.widgets.dir_tree import DirTree, child_path
from tui.widgets.file_table import FileTable
from tui.widgets.transfers import TransfersPanel

PROGRESS_INTERVAL = 0.1  # seconds between a transfer's progress-bar updates


def unsupported_route(error: QfsError) -> bool:
    """Whether the peer answered that it has no such route (an API it does not implement yet)."""
    return error.status == 405 or (error.status == 404 and "no route" in error.detail)


class FileActions(Widget):
    """The ``action_*`` methods FilesView binds to keys, and the workers behind them.

    The attributes below are FilesView's.
    """

    connection: Connection
    directory: str
    n: int
    stats: dict[str, dict[str, Any]]
    table: FileTable
    dir_tree: DirTree
    transfers: TransfersPanel
    _transfer_ids: itertools.count[int]
    refresh_listing: Callable[[], None]

    def _progress_reporter(self, transfer_id: int) -> ProgressFn:
        """A transfer worker's progress callback: it posts a message at most every
        PROGRESS_INTERVAL seconds (and on completion), so a fast transfer cannot flood the
        event loop with progress-bar repaints ahead of the user's key presses."""
        last_posted = -PROGRESS_INTERVAL

        def progress(done: int, total: int | None) -> None:
            nonlocal last_posted
            now = time.monotonic()
            if now - last_posted >= PROGRESS_INTERVAL or done == total:
                last_posted = now
                self.post_message(TransferProgress(transfer_id, done, total))

        return progress

    def _selected(self) -> tuple[str, dict[str, Any]] | None:
        entry = self.table.current_entry()
        if entry is None:
            self.notify("nothing selected", severity="warning", timeout=2)
            return None
        return self.table.path_of(entry), entry

    def action_upload(self) -> None:
        def chosen(local: str | None) -> None:
            if local:
                self.start_upload(Path(os.path.expanduser(local)), self.directory)

        prompt = f"Upload a local file or folder into {self.directory}  (Tab completes)"
        self.app.push_screen(PromptScreen(prompt, os.getcwd() + "/", local=True), chosen)

    def start_upload(self, local: Path, remote_dir: str) -> None:
        """Upload ``local`` (file or folder) into ``remote_dir`` in the background."""
        try:
            plan = transfer.upload_plan(local, remote_dir)
        except OSError as error:
            self.notify(str(error), severity="error")
            return
        transfer_id = next(self._transfer_ids)
        label = f"↑ {local.name} ({len(plan)} file{'s' * (len(plan) != 1)})"
        self.transfers.start(transfer_id, label)
        self.run_upload(transfer_id, label, plan, remote_dir)

    @work(thread=True, group="transfer", description="upload")
    def run_upload(
        self, transfer_id: int, label: str, plan: list[tuple[Path, str, int]], remote_dir: str
    ) -> None:
        """Send the files of ``plan``; progress and the outcome come back as messages."""
        worker = get_current_worker()
        progress = self._progress_reporter(transfer_id)
        try:
            sent = transfer.upload(self.connection, plan, progress, lambda: worker.is_cancelled)
        except (QfsError, OSError, transfer.Cancelled) as error:
            reason = "cancelled" if isinstance(error, transfer.Cancelled) else str(error)
            self.post_message(TransferFinished(transfer_id, label, reason, remote_dir))
            return
        summary = f"uploaded {len(plan)} file(s), {human_size(sent)} into {remote_dir}"
        self.post_message(TransferFinished(transfer_id, summary, refresh=remote_dir))

    def action_download(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        path, entry = selected
        if entry.get("type") == "dir":
            self.notify("download takes files; open the directory to pick them", timeout=3)
            return

        def chosen(local: str | None) -> None:
            if local:
                self.start_download(path, Path(os.path.expanduser(local)))

        default = os.path.join(os.getcwd(), entry["name"])
        self.app.push_screen(PromptScreen(f"Download {path} to", default, local=True), chosen)

    def start_download(self, remote: str, local: Path) -> None:
        """Download ``remote`` to the local file ``local`` in the background."""
        if local.is_dir():
            local = local / remote.rsplit("/", 1)[-1]
        transfer_id = next(self._transfer_ids)
        label = f"↓ {remote}"
        self.transfers.start(transfer_id, label)
        self.run_download(transfer_id, label, remote, local)

    @work(thread=True, group="transfer", description="download")
    def run_download(self, transfer_id: int, label: str, remote: str, local: Path) -> None:
        """Receive ``remote`` into ``local``."""
        worker = get_current_worker()
        progress = self._progress_reporter(transfer_id)
        try:
            size = transfer.download(
                self.connection, remote, local, progress, lambda: worker.is_cancelled
            )
        except (QfsError, OSError, transfer.Cancelled) as error:
            reason = "cancelled" if isinstance(error, transfer.Cancelled) else str(error)
            if isinstance(error, QfsError) and error.status == 300:
                reason = "it has concurrent versions: press c to resolve first"
            self.post_message(TransferFinished(transfer_id, label, reason))
            return
        self.post_message(
            TransferFinished(transfer_id, f"downloaded {remote} to {local} ({human_size(size)})")
        )

    def on_transfer_progress(self, message: TransferProgress) -> None:
        self.transfers.progress(message.transfer_id, message.done, message.total)

    def on_transfer_finished(self, message: TransferFinished) -> None:
        self.transfers.finish(message.transfer_id)
        if message.error is None:
            self.notify(message.summary)
        else:
            self.notify(f"{message.summary} failed: {message.error}", severity="error")
        if message.refresh is not None:
            self.dir_tree.reload()  # an uploaded folder is a new directory
        if message.refresh == self.directory:
            self.refresh_listing()

    def action_delete(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        path, entry = selected
        is_dir = entry.get("type") == "dir"
        question = f"Delete {path}{' and everything in it' if is_dir else ''}?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_action(
                    f"delete {path}",
                    f"deleted {path}",
                    lambda c: c.rmdir(path, recursive=True) if is_dir else c.rm(path),
                )

        self.app.push_screen(ConfirmScreen(question), answered)

    def action_move(self) -> None:
        self._transfer("move", "moved", "Rename or move")

    def action_copy(self) -> None:
        self._transfer("copy", "copied", "Copy")

    def _transfer(self, verb: str, done: str, title: str) -> None:
        """Ask where to, then move or copy the selected entry there (client.move / .copy)."""
        selected = self._selected()
        if selected is None:
            return
        path, _ = selected

        def chosen(target: str | None) -> None:
            if target and target != path:
                destination = (
                    target if target.startswith("/") else child_path(self.directory, target)
                )
                self.run_action(
                    f"{verb} {path}",
                    f"{done} {path} to {destination}",
                    lambda c: getattr(c, verb)(path, destination),
                )

        self.app.push_screen(PromptScreen(f"{title} {path} to", path), chosen)

    def action_chmod(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        path, entry = selected

        def chosen(mode: str | None) -> None:
            if not mode:
                return
            try:
                octal = format_mode(mode)
            except ValueError as error:
                self.notify(f"chmod {path} failed: {error}", severity="error")
                return
            self.run_action(
                f"chmod {path}", f"mode of {path} set to {octal}", lambda c: c.chmod(path, octal)
            )

        current = str(entry.get("mode") or "")
        prompt = f"New mode of {path} (octal, such as 0644)"
        self.app.push_screen(PromptScreen(prompt, current), chosen)

    def action_mkdir(self) -> None:
        def chosen(name: str | None) -> None:
            if name:
                target = name if name.startswith("/") else child_path(self.directory, name)
                self.run_action(
                    f"create {target}", f"created {target}", lambda c: c.mkdir(target, parents=True)
                )

        self.app.push_screen(PromptScreen(f"New directory in {self.directory}"), chosen)

    @work(thread=True, group="action", description="namespace change")
    def run_action(self, what: str, done: str, op: Callable[[Client], object]) -> None:
        """Run one namespace change ``op(client)``; report ``done``, or ``what`` failed."""
        try:
            self.connection.call(op)
        except (QfsError, ValueError) as error:
            detail = str(error)
            if isinstance(error, QfsError) and unsupported_route(error):
                detail = f"this peer does not support it yet ({error})"
            self.post_message(ActionDone(what, detail, self.directory))
            return
        self.post_message(ActionDone(done, refresh=self.directory))

    def on_action_done(self, message: ActionDone) -> None:
        if message.error is None:
            self.notify(message.summary)
        else:
            self.notify(f"{message.summary} failed: {message.error}", severity="error")
        if message.refresh is not None:
            self.stats.clear()
            self.table.health.clear()
            self.refresh_listing()
            self.dir_tree.reload()

    def action_placement(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        path, entry = selected
        if entry.get("type") == "dir":
            self.notify("pick a file to see where its blocks are", timeout=3)
            return
        self.app.push_screen(PlacementScreen(self.connection, path, self.n))

    def action_conflict(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        path, _ = selected

        def closed(resolved: bool | None) -> None:
            if resolved:
                self.refresh_listing()

        self.app.push_screen(ConflictScreen(self.connection, path), closed)
