"""Progress of a large directory move, as the CLI draws it on a terminal, with real peers."""

from __future__ import annotations

import io
from pathlib import Path

from peer.client.progress import count_files, tree_progress
from tests.support import running_cluster


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_large_directory_move_shows_files_arriving(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 3) as cluster, cluster.client("p1") as client:
        for i in range(150):
            client.put(f"/src/sub{i % 3}/f{i}", b"x")
        assert count_files(client, "/src") == 150
        terminal = Terminal()
        result = tree_progress(
            client, "move /src", "/src", "/dst", lambda: client.move("/src", "/dst"), terminal
        )
        assert result["path"] == "/dst"
        assert count_files(client, "/dst") == 150
        assert count_files(client, "/src") == 0
        assert "150/150" in terminal.getvalue()
        quiet = io.StringIO()  # not a terminal: no bar, the move still runs
        tree_progress(client, "move", "/dst", "/back", lambda: client.move("/dst", "/back"), quiet)
        assert quiet.getvalue() == ""
        assert count_files(client, "/back") == 150
