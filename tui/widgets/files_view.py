"""The files tab: breadcrumbs, directory tree, file table, preview and transfers.

Widgets inside post intents (OpenDirectory, EntryHighlighted, HealthWanted, TreeExpanded);
this view answers them by starting workers, which talk to peers through the Connection and post
result messages back. Nothing here blocks on the network. The actions on the selection
(upload, download, delete, move, copy, chmod...) live in file_actions.py.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input
from textual.worker import get_current_worker

from peer.client.api_client import QfsError
from tui.connection import Connection
from tui.format import healthy_holders
from tui.messages import (
    EntryHighlighted,
    HealthWanted,
    ListingLoaded,
    OpenDirectory,
    PreviewLoaded,
    StatLoaded,
    TreeChildrenLoaded,
    TreeExpanded,
)
from tui.reads import read_head
from tui.widgets.breadcrumbs import Breadcrumbs
from tui.widgets.dir_tree import DirTree, child_path
from tui.widgets.file_actions import FileActions
from tui.widgets.file_table import FileTable
from tui.widgets.preview import PREVIEW_LIMIT, Preview
from tui.widgets.transfers import TransfersPanel

HEALTH_CONCURRENCY = 4  # stat requests in flight while filling the replica-health column


def parent_of(path: str) -> str:
    """``/a/b`` -> ``/a``; ``/`` stays ``/``."""
    return path.rsplit("/", 1)[0] or "/"


class FilesView(FileActions, Vertical):
    """Browses one remote directory at a time and runs the file actions on the selection."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("backspace,h", "parent", "Up"),
        Binding("r", "refresh", "Refresh"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("u", "upload", "Upload"),
        Binding("d", "download", "Download"),
        Binding("n", "mkdir", "New dir"),
        Binding("m", "move", "Move"),
        Binding("y", "copy", "Copy"),
        Binding("p", "chmod", "Chmod"),
        Binding("x,delete", "delete", "Delete"),
        Binding("b", "placement", "Blocks"),
        Binding("c", "conflict", "Conflict"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, connection: Connection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection = connection
        self.directory = "/"
        self.n = 3  # replicas per file; the cluster's config replaces it on the first snapshot
        self.states: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._previewing: str | None = None
        self._transfer_ids = itertools.count(1)
        # Children by reference, not by query: results may still arrive while the app closes
        # and its widgets are being removed.
        self.crumbs = Breadcrumbs("/", id="crumbs")
        self.filter = Input(placeholder="filter by name", id="filter")
        self.dir_tree = DirTree(id="tree")
        self.table = FileTable(id="files")
        self.preview = Preview(id="preview")
        self.transfers = TransfersPanel(id="transfers")

    def compose(self) -> ComposeResult:
        with Horizontal(id="crumb-bar"):
            yield self.crumbs
            yield self.filter
        with Horizontal(id="panes"):
            yield self.dir_tree
            yield self.table
            yield self.preview
        yield self.transfers

    def on_mount(self) -> None:
        self.table.focus()
        self.open("/")

    # Navigation

    def open(self, path: str) -> None:
        """Show directory ``path`` (its listing loads in a worker)."""
        self.directory = path
        self.crumbs.show(path)
        self.dir_tree.reveal(path)
        self.load_listing(path)

    def refresh_listing(self) -> None:
        """Load the current directory again (after a change, or on r)."""
        self.load_listing(self.directory)

    @on(OpenDirectory)
    def _open_directory(self, message: OpenDirectory) -> None:
        message.stop()
        self.open(message.path)

    def action_parent(self) -> None:
        if self.directory != "/":
            child = self.directory
            self.open(parent_of(child))

    def action_refresh(self) -> None:
        self.stats.clear()
        self.table.health.clear()
        self.refresh_listing()
        self.dir_tree.reload()

    # Sort and filter

    def action_sort(self) -> None:
        self.notify(f"sorted by {self.table.cycle_sort()}", timeout=1.5)

    def action_reverse(self) -> None:
        descending = self.table.flip_sort()
        self.notify("descending" if descending else "ascending", timeout=1.5)

    def action_filter(self) -> None:
        self.filter.add_class("-shown")
        self.filter.focus()

    def action_clear_filter(self) -> None:
        self.filter.value = ""
        self.filter.remove_class("-shown")
        self.table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.table.focus()

    # Listing, tree, preview, health

    @work(thread=True, exclusive=True, group="listing", description="listing a directory")
    def load_listing(self, path: str) -> None:
        """Read the entries of ``path``."""
        try:
            entries = self.connection.call(lambda c: c.ls(path))
        except QfsError as error:
            self.post_message(ListingLoaded(path, error=str(error)))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(ListingLoaded(path, entries))

    def on_listing_loaded(self, message: ListingLoaded) -> None:
        if message.path != self.directory:
            return
        if message.error is not None:
            self.notify(f"cannot list {message.path}: {message.error}", severity="error")
            return
        self.table.show(message.path, message.entries)
        if not message.entries:
            self.preview.clear()

    def on_tree_expanded(self, message: TreeExpanded) -> None:
        self.load_tree(message.path)

    @work(thread=True, group="tree", description="listing subdirectories")
    def load_tree(self, path: str) -> None:
        """Read the subdirectories of ``path`` for the tree (one worker per expanded node)."""
        try:
            entries = self.connection.call(lambda c: c.ls(path))
        except QfsError:
            return  # the tree just stays as it is; the table reports listing errors
        names = [e["name"] for e in entries if e.get("type") == "dir"]
        self.post_message(TreeChildrenLoaded(path, names))

    def on_tree_children_loaded(self, message: TreeChildrenLoaded) -> None:
        self.dir_tree.set_children(message.path, message.names)

    def on_entry_highlighted(self, message: EntryHighlighted) -> None:
        path = child_path(message.directory, message.entry["name"])
        self.preview.show_entry(path, message.entry)
        self._previewing = path
        if message.entry.get("type") != "dir":
            self.load_preview(path, int(message.entry.get("size") or 0))

    @work(thread=True, exclusive=True, group="preview", description="reading a preview")
    def load_preview(self, path: str, size: int) -> None:
        """Read the first PREVIEW_LIMIT bytes of ``path``."""
        try:
            data = self.connection.call(lambda c: read_head(c, path, PREVIEW_LIMIT))
        except QfsError as error:
            message = str(error)
            if error.status == 300:
                message = "no single content to show: c lists the versions side by side"
            self.post_message(PreviewLoaded(path, size, error=message))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(PreviewLoaded(path, size, data))

    def on_preview_loaded(self, message: PreviewLoaded) -> None:
        if message.path != self._previewing:
            return
        preview = self.preview
        if message.data is None:
            preview.show_error(message.error or "no preview")
        else:
            preview.show_content(message.path.rsplit("/", 1)[-1], message.data, message.size)

    def on_health_wanted(self, message: HealthWanted) -> None:
        self.load_health(message.paths)

    @work(thread=True, exclusive=True, group="health", description="replica health")
    def load_health(self, paths: list[str]) -> None:
        """Stat the paths, a few at a time, first ones first; stops when newer rows are wanted."""
        worker = get_current_worker()

        def stat(path: str) -> dict[str, Any] | None:
            if worker.is_cancelled:
                return None
            try:
                return self.connection.call(lambda c: c.stat(path))
            except QfsError:
                return None  # e.g. a conflicted file: the ⚠ mark says why

        with ThreadPoolExecutor(HEALTH_CONCURRENCY, thread_name_prefix="qfs-stat") as pool:
            for path, result in zip(paths, pool.map(stat, paths), strict=True):
                if worker.is_cancelled:
                    return
                self.post_message(StatLoaded(path, result))

    def on_stat_loaded(self, message: StatLoaded) -> None:
        if message.stat is None:
            self.table.set_health(message.path, None)
            return
        self.stats[message.path] = message.stat
        self.table.set_health(message.path, (healthy_holders(message.stat, self.states), self.n))

    def cluster_changed(self, states: dict[str, str], n: int) -> None:
        """New member states: recount the health of the files already statted."""
        if states == self.states and n == self.n:
            return
        self.states, self.n = states, n
        for path, stat in self.stats.items():
            self.table.set_health(path, (healthy_holders(stat, states), n))
