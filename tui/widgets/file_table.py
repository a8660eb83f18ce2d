"""The file table of one remote directory: sortable, filterable, with replica health per file."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from peer.client.api_client import printable
from tui.format import health_style, human_size, local_time, shown
from tui.messages import EntryHighlighted, HealthWanted, OpenDirectory
from tui.widgets.dir_tree import child_path

SORT_KEYS = ("name", "size", "modified")
MIN_VISIBLE_ROWS = 30


def sort_entries(entries: list[dict[str, Any]], key: str, reverse: bool) -> list[dict[str, Any]]:
    """Directories first, then files, each group ordered by ``key`` (name breaks ties)."""

    def by(entry: dict[str, Any]) -> Any:
        name = entry["name"].casefold()
        if key == "size":
            return (entry.get("size") or 0, name)
        if key == "modified":
            return (entry.get("mtime") or 0, name)
        return name

    dirs = sorted((e for e in entries if e.get("type") == "dir"), key=by, reverse=reverse)
    files = sorted((e for e in entries if e.get("type") != "dir"), key=by, reverse=reverse)
    return dirs + files


def matches(entry: dict[str, Any], needle: str) -> bool:
    """Whether the entry's name contains ``needle``, ignoring case."""
    return needle.casefold() in entry["name"].casefold()


def attr_cells(entry: dict[str, Any]) -> list[Text]:
    """The mode, owner and group cells of a listing entry; ``-`` for what it lacks."""
    cells = []
    for key in ("mode", "owner", "group"):
        value = entry.get(key)
        cells.append(shown(value) if value not in (None, "") else Text("-", style="dim"))
    return cells


class FileTable(DataTable[Any]):
    """The entries of one directory; the row key is the entry name.

    Moving the cursor posts EntryHighlighted and HealthWanted (the highlighted and visible
    files whose health is not known yet); Enter on a directory posts OpenDirectory.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("l", "select_cursor", "Open", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.directory = "/"
        self.entries: list[dict[str, Any]] = []
        self.sort_key = "name"
        self.reverse = False
        self.needle = ""
        self.health: dict[str, tuple[int, int] | None] = {}
        """File path -> (healthy holders, N), or None when its stat failed."""

    def on_mount(self) -> None:
        self.add_column("Name", key="name")
        self.add_column("Size", key="size", width=9)
        self.add_column("Modified", key="modified", width=16)
        self.add_column("Replicas", key="replicas", width=8)
        self.add_column("Mode", key="mode", width=4)
        self.add_column("Owner", key="owner")
        self.add_column("Group", key="group")

    def show(self, directory: str, entries: list[dict[str, Any]]) -> None:
        """Display the listing of ``directory``; keeps the cursor on the same name if present."""
        if directory != self.directory:
            self.needle = ""
        self.directory = directory
        self.entries = entries
        self.rebuild()

    def rebuild(self) -> None:
        """Redraw the rows after a new listing, sort order or filter."""
        keep = self.current_name()
        shown = [e for e in self.entries if matches(e, self.needle)]
        self.clear()
        for entry in sort_entries(shown, self.sort_key, self.reverse):
            self.add_row(*self._cells(entry), key=entry["name"])
        names = [e["name"] for e in sort_entries(shown, self.sort_key, self.reverse)]
        if keep in names:
            self.move_cursor(row=names.index(keep), animate=False)
        self._announce()

    def path_of(self, entry: dict[str, Any]) -> str:
        """The remote path of one of this directory's entries."""
        return child_path(self.directory, entry["name"])

    def current_entry(self) -> dict[str, Any] | None:
        """The entry under the cursor, if any."""
        name = self.current_name()
        return next((e for e in self.entries if e["name"] == name), None)

    def current_name(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    def set_health(self, path: str, health: tuple[int, int] | None) -> None:
        """Record a file's (healthy holders, N), None if unknown; show it if its row is there."""
        self.health[path] = health
        name = path.rsplit("/", 1)[-1]
        if path == child_path(self.directory, name) and name in self.rows:
            self.update_cell(name, "replicas", self._health_cell(path))

    def cycle_sort(self) -> str:
        """Sort by the next key (name, size, modified); returns it."""
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self.rebuild()
        return self.sort_key

    def flip_sort(self) -> bool:
        """Reverse the order; returns whether it is now descending."""
        self.reverse = not self.reverse
        self.rebuild()
        return self.reverse

    def set_filter(self, needle: str) -> None:
        """Show only entries whose name contains ``needle`` (case-insensitive)."""
        self.needle = needle
        self.rebuild()

    def visible_files(self) -> list[str]:
        """Paths of the file rows currently on screen (the health the user can see)."""
        top = int(self.scroll_y)
        # Before the first layout the height is 0: assume a screenful rather than nothing.
        bottom = min(self.row_count, top + max(MIN_VISIBLE_ROWS, self.size.height - 1))
        names = [row.key.value for row in self.ordered_rows[top:bottom]]
        by_name = {e["name"]: e for e in self.entries}
        return [
            child_path(self.directory, name)
            for name in names
            if name is not None and by_name.get(name, {}).get("type") != "dir"
        ]

    def _cells(self, entry: dict[str, Any]) -> list[Text | str]:
        is_dir = entry.get("type") == "dir"
        if is_dir:
            name = Text.assemble(("▸ ", "blue"), (printable(entry["name"]) + "/", "bold blue"))
        elif entry.get("conflict"):
            name = Text.assemble(("⚠ ", "bold yellow"), printable(entry["name"]))
        else:
            name = Text("  " + printable(entry["name"]))
        size = Text("" if is_dir else human_size(entry.get("size")), justify="right")
        health = "" if is_dir else self._health_cell(self.path_of(entry))
        return [name, size, local_time(entry.get("mtime")), health, *attr_cells(entry)]

    def _health_cell(self, path: str) -> Text:
        if path not in self.health:
            return Text("…", style="dim", justify="right")
        if (health := self.health[path]) is None:
            return Text("?", style="dim", justify="right")
        healthy, n = health
        return Text(f"{healthy}/{n}", style=health_style(healthy, n), justify="right")

    def _announce(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            self.post_message(EntryHighlighted(self.directory, entry))
        self._want_health()

    def _want_health(self) -> None:
        """Ask for the health of the selected file first, then of the other visible ones."""
        entry = self.current_entry()
        first = [] if entry is None or entry.get("type") == "dir" else [self.path_of(entry)]
        wanted = [p for p in first + self.visible_files() if p not in self.health]
        if wanted:
            self.post_message(HealthWanted(list(dict.fromkeys(wanted))))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):  # scrolled by wheel or scrollbar too
            self._want_health()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._announce()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        entry = self.current_entry()
        if entry is not None and entry.get("type") == "dir":
            self.post_message(OpenDirectory(self.path_of(entry)))
