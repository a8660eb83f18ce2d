"""The TUI's pure helpers and its failover logic, without a terminal.

Connection is exercised with the FAKE client (fake_client.py): it checks which peer the TUI
switches to and when, not what real peers answer (test_tui_cluster.py does that).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_client import FakeClient, sample_world

from peer.client.api_client import QfsError
from tui.connection import Connection, NoLivePeer, vouched
from tui.format import healthy_holders, human_size
from tui.membership import member_events
from tui.screens.dialogs import LocalPathSuggester, PromptScreen
from tui.transfer import upload_plan
from tui.widgets.breadcrumbs import ancestors
from tui.widgets.cluster_view import repair_summary
from tui.widgets.file_actions import unsupported_route
from tui.widgets.file_table import attr_cells, sort_entries
from tui.widgets.files_view import parent_of
from tui.widgets.preview import hex_dump, hex_width, looks_binary


def test_human_size() -> None:
    assert [human_size(n) for n in (None, 0, 1023, 1536, 3 << 20, 5 << 40)] == [
        "",
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 TiB",
    ]


def test_health_counts_live_holders_of_the_least_held_block() -> None:
    states = {"p1": "alive", "p2": "alive", "p3": "dead"}
    stat = {"blocks": [{"holders": ["p1", "p2", "p3"]}, {"holders": ["p1", "p3"]}]}
    assert healthy_holders(stat, states) == 1
    inline = {"blocks": [], "replicas": ["p1", "p2", "p3"]}
    assert healthy_holders(inline, states) == 2
    assert healthy_holders({"blocks": [{"holders": ["p9"]}]}, states) == 0  # unknown peer


def test_member_events() -> None:
    a = {"name": "a", "state": "alive", "incarnation": 1}
    b = {"name": "b", "state": "alive", "incarnation": 0}
    assert member_events(None, [a]) == ["a seen: alive (incarnation 1)"]
    assert member_events([a], [a, b]) == ["b joined: alive (incarnation 0)"]
    suspect = {**b, "state": "suspect"}
    assert member_events([a, b], [a, suspect]) == ["b alive -> suspect (incarnation 0)"]
    refuted = {**b, "incarnation": 1}
    assert member_events([a, b], [a, refuted]) == ["b incarnation 0 -> 1"]
    assert member_events([a, b], [a]) == ["b left the member list"]
    assert member_events([a, b], [a, b]) == []


def test_sort_puts_directories_first() -> None:
    entries = [
        {"name": "b.txt", "type": "file", "size": 5, "mtime": 1},
        {"name": "Z", "type": "dir", "size": 0, "mtime": 9},
        {"name": "a.txt", "type": "file", "size": 50, "mtime": 2},
        {"name": "c", "type": "dir", "size": 0, "mtime": 0},
    ]
    names = lambda key, rev: [e["name"] for e in sort_entries(entries, key, rev)]  # noqa: E731
    assert names("name", False) == ["c", "Z", "a.txt", "b.txt"]
    assert names("size", True) == ["Z", "c", "a.txt", "b.txt"]
    assert names("modified", False) == ["c", "Z", "b.txt", "a.txt"]


def test_paths() -> None:
    assert ancestors("/a/b") == [("/", "/"), ("a", "/a"), ("b", "/a/b")]
    assert ancestors("/") == [("/", "/")]
    assert parent_of("/a/b") == "/a" and parent_of("/a") == "/" and parent_of("/") == "/"


def test_unsupported_route() -> None:
    assert unsupported_route(QfsError(404, "not found", "no route '/v1/move'"))
    assert unsupported_route(QfsError(405, "method not allowed", ""))
    assert not unsupported_route(QfsError(404, "not found", "no file at /x"))


def test_binary_detection_and_hex() -> None:
    assert not looks_binary("héllo wörld\n".encode())
    assert not looks_binary("é".encode() * 10 + "é".encode()[:1])  # cut at the preview limit
    assert looks_binary(b"\x00\x01\x02")
    assert looks_binary(b"\xff\xfe" * 100)
    assert hex_dump(b"AB\x00", width=4).plain == "0000 41 42 00    AB.\n"
    assert [hex_width(c) for c in (80, 40, 20)] == [16, 8, 4]


def test_upload_plan_of_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"12345")
    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    (album / "a").write_bytes(b"a")
    (album / "sub" / "b").write_bytes(b"bb")
    assert upload_plan(tmp_path / "f.txt", "/") == [(tmp_path / "f.txt", "/f.txt", 5)]
    assert upload_plan(album, "/x") == [
        (album / "a", "/x/album/a", 1),
        (album / "sub" / "b", "/x/album/sub/b", 2),
    ]
    with pytest.raises(FileNotFoundError):
        upload_plan(tmp_path / "missing", "/")


@pytest.mark.anyio
async def test_local_path_completion(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    suggester = LocalPathSuggester()
    assert await suggester.get_suggestion(f"{tmp_path}/ph") == f"{tmp_path}/photos/"
    assert await suggester.get_suggestion(f"{tmp_path}/no") == f"{tmp_path}/notes.txt"
    assert await suggester.get_suggestion(f"{tmp_path}/zz") is None


def test_connection_fails_over_to_a_live_member() -> None:
    world = sample_world()
    switches: list[tuple[str, str]] = []
    connection = Connection(FakeClient(world), on_switch=lambda a, b: switches.append((a, b)))
    connection.cluster()  # learns the members
    world.down.add("http://127.0.0.1:8001")
    assert connection.call(lambda c: c.ls("/"))  # answered by another peer
    assert switches == [("http://127.0.0.1:8001", "http://127.0.0.1:8002")]  # alive first
    assert connection.base_url == "http://127.0.0.1:8002"


def test_connection_keeps_its_peer_on_http_errors() -> None:
    world = sample_world()
    connection = Connection(FakeClient(world))
    connection.cluster()
    with pytest.raises(QfsError) as caught:
        connection.call(lambda c: c.ls("/missing"))
    assert caught.value.status == 404
    assert connection.base_url == "http://127.0.0.1:8001"


def test_connection_with_no_live_peer_says_so() -> None:
    world = sample_world()
    connection = Connection(FakeClient(world))
    connection.cluster()
    world.down = {m["http"] for m in world.members}
    with pytest.raises(NoLivePeer) as caught:
        connection.call(lambda c: c.ls("/"))
    assert caught.value.status is None
    assert "does not answer" in str(caught.value)
    world.down.clear()  # the peer is back: the same connection works again
    assert connection.call(lambda c: c.ls("/"))


def test_attribute_cells_show_a_dash_for_what_is_missing() -> None:
    full = {"name": "a", "mode": "0640", "owner": "alice", "group": "staff"}
    assert [c.plain for c in attr_cells(full)] == ["0640", "alice", "staff"]
    assert [c.plain for c in attr_cells({"name": "b", "owner": ""})] == ["-", "-", "-"]


def test_repair_summary() -> None:
    assert "not reported" in repair_summary(None).plain
    text = repair_summary({"under_replicated": 3, "last_round_s": 75.0, "bytes_moved": 2048})
    assert "under-replicated 3" in text.plain and "last 1m ago" in text.plain
    assert "moved 2.0 KiB" in text.plain and "pass ? at block ?" in text.plain  # partial object


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("http://127.0.0.1:8002", True),
        ("http://[::1]:8002", True),
        ("http://localhost:8002", True),
        ("https://127.0.0.1:8002", False),  # another scheme
        ("http://10.0.0.5:8002", False),  # loopback hands over to loopback only
        ("http://8.8.8.8:8002", False),
        ("http://evil.example:8002", False),
        ("http://user:pw@127.0.0.1:8002", False),
        ("", False),
        ("http://127.0.0.1:8003\x1b[2J", False),  # not a URL
        ("http://127.0.0.1:80x", False),
    ],
)
def test_a_loopback_peer_vouches_for_loopback_addresses_only(
    candidate: str, expected: bool
) -> None:
    assert vouched("http://127.0.0.1:8001", candidate) is expected


def test_remote_peers_vouch_for_addresses_of_their_own_kind() -> None:
    assert vouched("https://10.1.2.3:8001", "https://10.9.9.9:8001")
    assert not vouched("https://10.1.2.3:8001", "http://10.9.9.9:8001")  # never a downgrade
    assert not vouched("https://10.1.2.3:8001", "https://127.0.0.1:8001")  # a local listener
    assert not vouched("https://10.1.2.3:8001", "https://8.8.8.8:8001")  # public
    assert not vouched("https://10.1.2.3:8001", "https://[fd00::1]:8001")  # another IP version
    assert vouched("https://8.8.4.4:8001", "https://1.1.1.1:8001")
    assert vouched("https://p1.qfs.example:8001", "https://p2.qfs.example:8001")
    assert not vouched("https://p1.qfs.example:8001", "https://p2.elsewhere.example:8001")
    assert not vouched("http://0.0.0.0:8001", "http://0.0.0.0:8002")


def test_failover_sends_the_token_only_where_the_given_peer_vouches() -> None:
    world = sample_world()
    world.members[1]["http"] = "http://8.8.8.8:8002"  # a hostile member's address
    switches: list[tuple[str, str]] = []
    connection = Connection(FakeClient(world), on_switch=lambda a, b: switches.append((a, b)))
    connection.cluster()
    world.down.add("http://127.0.0.1:8001")
    assert connection.call(lambda c: c.ls("/"))
    assert switches == [("http://127.0.0.1:8001", "http://127.0.0.1:8003")]  # p2 never tried
    # What a peer failed over to reports vouches for nothing: p3 now lists an outside address.
    world.members[0]["http"] = "http://127.0.0.1:8009"
    connection.cluster()
    world.down.add("http://127.0.0.1:8003")
    with pytest.raises(NoLivePeer) as caught:
        connection.call(lambda c: c.ls("/"))
    assert caught.value.tried == ["http://127.0.0.1:8001"]  # the given peer; 8009 never


def test_a_prompt_never_proposes_a_value_with_control_characters() -> None:
    assert PromptScreen("Move /a to", "/a b/ünï").value == "/a b/ünï"
    assert PromptScreen("Move /e\x1b[2J to", "/e\x1b[2J").value == ""
