"""The qfs command line against an in-memory fake peer: output, exit codes, modes, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from peer.client import cli
from peer.client.api_client import Client, printable
from peer.client.progress import transfer_progress
from peer.main import PROGRAMS
from peer.main import main as qfs_main
from tests.unit.peer.client import fake_peer
from tests.unit.peer.client.fake_peer import FakePeer, StoredFile

Run = Callable[..., int]
SIBLINGS = [
    {"version": "va", "size": 3, "blake3": "a" * 64, "mtime": 0},
    {"version": "vb", "size": 12345, "blake3": "b" * 64, "mtime": 0},
]


@pytest.fixture
def peer() -> FakePeer:
    return FakePeer()


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch, peer: FakePeer, tmp_path: Path) -> list[Client]:
    """Every Client the CLI creates, each wired to the fake peer; run from an empty folder and
    without QFS_* variables, so a demo's client config in the checkout is not picked up."""
    made: list[Client] = []
    monkeypatch.chdir(tmp_path)

    def make(base_url: str, token: str | None, ca: str | None = None) -> Client:
        made.append(Client(base_url, token, ca=ca, transport=peer))
        return made[-1]

    monkeypatch.setattr(cli, "Client", make)
    for name in ("QFS_PEER", "QFS_TOKEN", "QFS_CA", "QFS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return made


@pytest.fixture
def qfs(clients: list[Client]) -> Run:
    return lambda *argv: cli.main([str(a) for a in argv])


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# put


def test_put_keeps_the_local_mode(qfs: Run, peer: FakePeer, tmp_path: Path, capsys) -> None:
    local = tmp_path / "notes.txt"
    local.write_bytes(b"hello")
    local.chmod(0o640)
    assert qfs("put", local, "/docs/notes.txt") == 0
    assert peer.files["/docs/notes.txt"].data == b"hello"
    assert peer.last.params["mode"] == "0640"
    assert (
        capsys.readouterr().out
        == f"/docs/notes.txt: 5 bytes, version {peer.files['/docs/notes.txt'].version}\n"
    )


def test_put_mode_option_wins(qfs: Run, peer: FakePeer, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    assert qfs("put", "--mode", "600", local, "f") == 0
    assert peer.last.params["mode"] == "0600"


def test_put_json_prints_the_server_answer(qfs: Run, tmp_path: Path, capsys) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"abc")
    assert qfs("put", "--json", local, "f", "--version", "ctx", "-w", "3") == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"path", "size", "blake3", "version"}
    assert answer["size"] == 3


def test_put_into_a_directory_keeps_the_name(qfs: Run, peer: FakePeer, tmp_path: Path) -> None:
    local = tmp_path / "a.bin"
    local.write_bytes(b"x")
    assert qfs("put", local, "/in/") == 0
    assert "/in/a.bin" in peer.files


def test_put_from_stdin(qfs: Run, peer: FakePeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped\x00bytes")))
    assert qfs("put", "-", "p") == 0
    assert peer.files["/p"].data == b"piped\x00bytes"
    assert "mode" not in peer.last.params


def test_put_of_a_missing_file(qfs: Run, peer: FakePeer, tmp_path: Path, capsys) -> None:
    assert qfs("put", tmp_path / "nope", "f") == 1
    assert error_lines(capsys) == [f"qfs: error: {tmp_path / 'nope'}: No such file or directory"]
    assert peer.seen == []


# get


def test_get_restores_the_mode(qfs: Run, peer: FakePeer, tmp_path: Path) -> None:
    peer.files["/f"] = StoredFile(b"content", 0o751, "v1")
    local = tmp_path / "out"
    assert qfs("get", "f", local) == 0
    assert local.read_bytes() == b"content"
    assert local.stat().st_mode & 0o7777 == 0o751
    assert os.listdir(tmp_path) == ["out"]


def test_get_into_a_directory_or_the_cwd(
    qfs: Run, peer: FakePeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer.files["/d/name.txt"] = StoredFile(b"x", 0o644, "v1")
    assert qfs("get", "/d/name.txt", tmp_path) == 0
    assert (tmp_path / "name.txt").read_bytes() == b"x"
    (tmp_path / "name.txt").unlink()
    monkeypatch.chdir(tmp_path)
    assert qfs("get", "d/name.txt", "--version", "v1", "-r", "1") == 0
    assert (tmp_path / "name.txt").read_bytes() == b"x"
    assert peer.last.params == {"version": "v1", "r": "1"}


def test_get_to_stdout(qfs: Run, peer: FakePeer, capsysbinary) -> None:
    peer.files["/f"] = StoredFile(b"\x00binary\xff", 0o644, "v1")
    assert qfs("get", "f", "-") == 0
    assert capsysbinary.readouterr().out == b"\x00binary\xff"


def test_failed_get_leaves_the_local_file_alone(qfs: Run, tmp_path: Path, capsys) -> None:
    local = tmp_path / "keep"
    local.write_bytes(b"old")
    assert qfs("get", "missing", local) == 1
    assert local.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep"]
    assert error_lines(capsys) == ["qfs: error: 404 not_found: no file /missing"]


def test_get_into_a_missing_directory(qfs: Run, peer: FakePeer, tmp_path: Path, capsys) -> None:
    peer.files["/f"] = StoredFile(b"x", 0o644, "v1")
    assert qfs("get", "f", tmp_path / "no" / "f") == 1
    assert error_lines(capsys) == [
        f"qfs: error: {tmp_path / 'no' / 'f'}: No such file or directory"
    ]


def test_get_of_a_conflict_lists_siblings_and_the_way_out(
    qfs: Run, peer: FakePeer, tmp_path: Path, capsys
) -> None:
    peer.conflicts["/c.txt"] = SIBLINGS
    assert qfs("get", "c.txt", tmp_path / "c.txt") == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "qfs: error: 300 conflict: /c.txt has 2 concurrent versions"
    assert "VERSION" in lines[1]
    assert any(line.split()[:2] == ["va", "3"] for line in lines)
    assert any(line.split()[:2] == ["vb", "12345"] for line in lines)
    assert "qfs get --version VERSION /c.txt LOCAL" in err
    assert "qfs put --version ctx-both LOCAL /c.txt" in err
    assert os.listdir(tmp_path) == []


def test_get_with_a_wrong_hash_is_corrupt_and_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    bad = httpx.Response(200, content=b"evil", headers={"ETag": f'"{"0" * 64}"'})
    transport = httpx.MockTransport(lambda request: bad)
    monkeypatch.setattr(
        cli, "Client", lambda url, token, ca=None: Client(url, token, transport=transport)
    )
    assert cli.main(["get", "f", str(tmp_path / "f")]) == 3
    assert os.listdir(tmp_path) == []
    assert error_lines(capsys)[0].startswith("qfs: error: corrupt: /f:")


# ls, stat, members


def listing(peer: FakePeer) -> None:
    peer.dirs |= {"/d", "/d/sub"}
    peer.files["/d/b.txt"] = StoredFile(b"12345", 0o640, "v1")
    peer.files["/d/a.txt"] = StoredFile(b"1", 0o600, "v1")


def test_ls_prints_names_with_dirs_slashed(qfs: Run, peer: FakePeer, capsys) -> None:
    listing(peer)
    assert qfs("ls", "/d") == 0
    assert capsys.readouterr().out == "a.txt\nb.txt\nsub/\n"


def test_ls_long(qfs: Run, peer: FakePeer, capsys) -> None:
    listing(peer)
    assert qfs("ls", "-l", "d") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODE", "OWNER", "GROUP", "SIZE", "MTIME", "NAME"]
    assert lines[2].split()[:4] == ["-rw-r-----", "alice", "staff", "5"]
    assert lines[2].endswith("b.txt")
    assert lines[3].split()[:4] == ["-", "-", "-", "-"]
    assert lines[3].endswith("sub/")


def test_ls_json_is_the_server_json(qfs: Run, peer: FakePeer, capsys) -> None:
    listing(peer)
    assert qfs("ls", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "path": "/",
        "entries": [{"name": "d", "type": "dir", "size": None, "mtime": 0}],
    }


def test_stat(qfs: Run, peer: FakePeer, capsys) -> None:
    peer.files["/f"] = StoredFile(b"abc", 0o644, "v1")
    assert qfs("stat", "f") == 0
    out = capsys.readouterr().out
    assert "path:      /f" in out
    assert "HOLDERS" in out
    assert "p1,p2" in out
    assert qfs("stat", "--json", "f") == 0
    assert json.loads(capsys.readouterr().out)["blocks"][0]["holders"] == ["p1", "p2"]


def test_members_marks_the_answering_peer(qfs: Run, capsys) -> None:
    assert qfs("members") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "INCARNATION", "ADDR", "HTTP"]
    assert lines[1].split() == [
        "p1",
        "alive",
        "0",
        "127.0.0.1:7001",
        "http://127.0.0.1:8001",
        "self",
    ]
    assert lines[2].split() == ["p2", "suspect", "3", "127.0.0.1:7002", "http://127.0.0.1:8002"]
    assert "N=3" in lines[3]
    assert qfs("members", "--json") == 0
    assert json.loads(capsys.readouterr().out)["self"] == "p1"


# Namespace and tokens


def test_namespace_commands(qfs: Run, peer: FakePeer) -> None:
    assert qfs("mkdir", "-p", "a/b") == 0
    assert (peer.last.method, peer.last.raw_path, peer.last.params) == (
        "PUT",
        "/v1/dirs/a/b",
        {"parents": "1"},
    )
    assert qfs("rmdir", "-r", "a") == 0
    assert peer.last.params == {"recursive": "1"}
    peer.files["/x"] = StoredFile(b"x", 0o644, "v1")
    assert qfs("cp", "x", "y") == 0
    assert qfs("mv", "-f", "x", "y") == 0
    assert json.loads(peer.last.body) == {"from": "/x", "to": "/y", "overwrite": True}
    assert qfs("chmod", "0600", "y") == 0
    assert json.loads(peer.last.body) == {"mode": "0600"}
    assert qfs("chown", "bob:dev", "y") == 0
    assert json.loads(peer.last.body) == {"owner": "bob", "group": "dev"}
    assert qfs("chown", ":dev", "y") == 0
    assert json.loads(peer.last.body) == {"group": "dev"}
    assert qfs("rm", "y") == 0
    assert peer.files == {}


def test_cp_onto_an_existing_file_needs_force(qfs: Run, peer: FakePeer, capsys) -> None:
    peer.files["/x"] = StoredFile(b"x", 0o644, "v1")
    peer.files["/y"] = StoredFile(b"y", 0o644, "v1")
    assert qfs("cp", "x", "y") == 1
    assert error_lines(capsys) == ["qfs: error: 409 exists: /y exists"]


def test_token_create_prints_only_the_secret_on_stdout(qfs: Run, peer: FakePeer, capsys) -> None:
    assert qfs("token", "create", "bob", "--groups", "dev, ops,", "--admin") == 0
    out, err = capsys.readouterr()
    assert out == "s3cret\n"
    assert "shown only this once" in err
    assert json.loads(peer.last.body) == {"user": "bob", "groups": ["dev", "ops"], "admin": True}


def test_token_list_revoke_whoami(qfs: Run, peer: FakePeer, capsys) -> None:
    assert qfs("token", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["t1", "bob", "dev,ops", "no"]
    assert qfs("token", "revoke", "t1") == 0
    assert (peer.last.method, peer.last.raw_path) == ("DELETE", "/v1/tokens/t1")
    assert qfs("whoami") == 0
    assert capsys.readouterr().out == "alice (groups: staff; admin)\n"
    assert qfs("whoami", "--json") == 0
    assert json.loads(capsys.readouterr().out)["user"] == "alice"


# Peer URL and token


def test_peer_and_token_from_flags_before_or_after_the_command(
    qfs: Run, clients: list[Client]
) -> None:
    assert qfs("--peer", "127.0.0.1:8002", "members", "--token", "t") == 0
    assert qfs("members", "--peer", "http://127.0.0.1:8003") == 0
    assert [(c.base_url, c.token) for c in clients] == [
        ("http://127.0.0.1:8002", "t"),
        ("http://127.0.0.1:8003", None),
    ]


def test_peer_and_token_from_the_environment(
    qfs: Run, clients: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert qfs("members") == 0
    monkeypatch.setenv("QFS_PEER", "http://127.0.0.1:8005")
    monkeypatch.setenv("QFS_TOKEN", "env-token")
    assert qfs("members") == 0
    assert qfs("members", "--token", "flag-token") == 0
    assert [(c.base_url, c.token) for c in clients] == [
        ("http://127.0.0.1:8001", None),
        ("http://127.0.0.1:8005", "env-token"),
        ("http://127.0.0.1:8005", "flag-token"),
    ]


def test_unauthorized_without_token_gives_a_hint(qfs: Run, peer: FakePeer, capsys) -> None:
    peer.token = "right"
    assert qfs("ls") == 1
    assert error_lines(capsys) == [
        "qfs: error: 401 unauthorized: missing or unknown token"
        " (give a token with QFS_TOKEN or --token-file FILE)"
    ]
    assert qfs("ls", "--token", "right") == 0


# Errors and exit codes


def test_server_error_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    body = {"error": "unavailable", "detail": "quorum not met: 1 of 2 replicas acknowledged"}
    transport = httpx.MockTransport(lambda request: httpx.Response(503, json=body))
    monkeypatch.setattr(
        cli, "Client", lambda url, token, ca=None: Client(url, token, transport=transport)
    )
    local = tmp_path / "f"
    local.write_bytes(b"x")
    assert cli.main(["put", str(local), "f"]) == 1
    assert error_lines(capsys) == [
        "qfs: error: 503 unavailable: quorum not met: 1 of 2 replicas acknowledged"
    ]


def test_unreachable_peer_is_exit_3(capsys) -> None:
    assert cli.main(["--peer", "http://127.0.0.1:9", "ls"]) == 3
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("qfs: error: unreachable: cannot connect to http://127.0.0.1:9")
    assert "--peer" in lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["put", "onlyone"], "the following arguments are required: REMOTE"),
        (["put", "--mode", "u+x", "a", "b"], "bad mode 'u+x'"),
        (["get", "a/../b"], "'.' and '..' segments are not allowed"),
        (["get", "/"], "REMOTE must name a file"),
        (["ls", "--bogus"], "unrecognized arguments: --bogus"),
        (["chown", ":", "f"], "expected USER[:GROUP]"),
        (["get", "f", "-r", "0"], "expected a positive integer"),
        (["--peer", "ftp://x", "ls"], "bad peer URL"),
        (["token"], "the following arguments are required: ACTION"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    qfs: Run, peer: FakePeer, capsys, argv: list[str], message: str
) -> None:
    assert qfs(*argv) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("qfs")
    assert ": error: " in lines[0]
    assert message in lines[0]
    assert peer.seen == []


def test_help_exits_0(qfs: Run, capsys) -> None:
    assert qfs("--help") == 0
    out = capsys.readouterr().out
    for command in ("put", "get", "ls", "members", "peer", "demo", "tui", "token", "whoami"):
        assert command in out


def test_client_commands_import_neither_twisted_nor_textual() -> None:
    code = (
        "import sys; from peer.client import cli; cli.build_parser();"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'textual', 'rich'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


# Delegated commands


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))


def test_peer_parses_its_flags_and_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[Any] = []
    fake_module(monkeypatch, "peer.node", run_peer=lambda config: ran.append(config) or 0)
    argv = ["peer", "--name", "p1", "--data", str(tmp_path), "--port", "7001", "--http", "8001"]
    argv.append("--insecure")
    assert qfs_main([*argv, "--join", "127.0.0.1:7002"]) == 0
    assert ran[0].name == "p1"
    assert ran[0].http == 8001


def test_peer_with_bad_config_is_a_usage_error(capsys) -> None:
    assert qfs_main(["peer", "--name", "p1"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("qfs: error: bad peer configuration: missing required setting")


def test_peer_help_shows_the_peer_flags(capsys) -> None:
    assert qfs_main(["peer", "--help"]) == 0
    assert "--write-quorum" in capsys.readouterr().out


def test_demo_and_tui_are_delegated(monkeypatch: pytest.MonkeyPatch, clients: list[Client]) -> None:
    seen: dict[str, Any] = {}
    def run_demo(args: Any, open_ui: Any, run_cluster: Any) -> int:
        seen["demo"] = args
        seen["demo_ui"] = open_ui
        seen["demo_cluster"] = run_cluster
        return 0

    fake_module(monkeypatch, "peer.client.demo", run_demo=run_demo)
    fake_module(monkeypatch, "tui.app", run_tui=lambda client: seen.setdefault("tui", client) and 0)
    assert qfs_main(["demo", "--headless", "--procfile", "P"]) == 0
    assert (seen["demo"].procfile, seen["demo"].headless) == ("P", True)
    assert seen["demo_ui"] is PROGRAMS.open_ui
    assert seen["demo_cluster"] is PROGRAMS.run_cluster
    assert qfs_main(["tui", "--peer", "127.0.0.1:8002"]) == 0
    assert seen["tui"] is clients[0]
    assert clients[0].base_url == "http://127.0.0.1:8002"


def test_program_commands_need_the_qfs_program(capsys) -> None:
    for command in ("peer", "tui", "demo", "cluster"):
        assert cli.main([command]) == 2
        assert "qfs program" in capsys.readouterr().err


# Progress bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    with transfer_progress("put f", stream, threshold=10) as bar:
        bar(100, 100)
    assert stream.getvalue() == ""


def test_progress_draws_on_a_terminal_only_for_large_transfers() -> None:
    small, large = Terminal(), Terminal()
    with transfer_progress("put f", small, threshold=10) as bar:
        bar(5, 9)
    with transfer_progress("put f", large, threshold=10) as bar:
        bar(5, 100)
        bar(100, 100)
    assert small.getvalue() == ""
    assert large.getvalue() != ""


def test_the_client_config_file_gives_peer_ca_and_token_and_flags_win(
    monkeypatch: pytest.MonkeyPatch, clients: list[Client], tmp_path: Path
) -> None:
    folder = tmp_path / "data" / "cluster"
    folder.mkdir(parents=True)
    (folder / "admin.token").write_text("tok\n")
    (folder / "admin.token").chmod(0o600)  # as qfs cluster init writes it
    (folder / "client.toml").write_text(
        'peer = "http://127.0.0.1:8009"\nca = "ca.crt"\ntoken-file = "admin.token"\n'
    )
    monkeypatch.setattr(cli, "Client", lambda url, token, ca=None: clients.append((url, token, ca)))
    monkeypatch.chdir(tmp_path)  # the demo's file, found from the Procfile's folder
    with pytest.raises(TypeError):  # the fake "client" is no context manager: stop there
        cli.main(["ls"])
    assert clients[-1] == ("http://127.0.0.1:8009", "tok", str(folder / "ca.crt"))
    monkeypatch.setenv("QFS_CA", "/other/ca.crt")
    with pytest.raises(TypeError):
        cli.main(["ls", "--peer", "http://127.0.0.1:8010", "--token", "t2"])
    assert clients[-1] == ("http://127.0.0.1:8010", "t2", "/other/ca.crt")
    monkeypatch.setenv("QFS_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.main(["ls"]) == 2


def test_a_token_comes_from_a_private_file_and_a_flag_token_warns(
    qfs: Run, clients: list[Client], tmp_path: Path, capsys
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    token_file.chmod(0o600)
    assert qfs("members", "--token-file", token_file) == 0
    assert "warning" not in capsys.readouterr().err
    assert qfs("members", "--token", "flag-token") == 0
    assert "shows in ps" in capsys.readouterr().err
    assert [c.token for c in clients] == ["file-token", "flag-token"]
    token_file.chmod(0o640)
    assert qfs("members", "--token-file", token_file) == 2
    assert error_lines(capsys) == [
        f"qfs: error: token file {token_file}: permissions 0640 are too open: it must not be "
        f"readable or writable by group or others (chmod 600 {token_file})"
    ]
    assert len(clients) == 2  # refused before any request


HOSTILE = "evil\x1b]0;owned\x07\x1b[2J\r\u202eexe.txt"
ESCAPED = "evil\\x1b]0;owned\\x07\\x1b[2J\\x0d\\u202eexe.txt"


def test_names_and_addresses_from_the_peer_are_printed_escaped(
    qfs: Run, peer: FakePeer, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    hostile = {
        "name": HOSTILE,
        "id": "id3",
        "state": "alive\x1b[31m",
        "incarnation": 1,
        "addr": "127.0.0.1:7003\x1b[1A",
        "http": "http://127.0.0.1:8003\x9b2J",
    }
    monkeypatch.setattr(fake_peer, "MEMBERS", [*fake_peer.MEMBERS, hostile])
    peer.files["/docs/" + HOSTILE] = StoredFile(b"x", 0o644, "v1")
    peer.dirs.add("/docs")
    assert qfs("members") == 0
    assert qfs("ls", "-l", "/docs") == 0
    assert qfs("ls", "/docs") == 0
    out = capsys.readouterr().out
    assert ESCAPED in out
    assert "\\x1b[31m" in out and "\\x1b[1A" in out and "\\x9b2J" in out
    assert not any(ch in out for ch in "\x1b\x07\r\x9b\u202e")
    assert qfs("members", "--json") == 0
    assert "\x1b" not in capsys.readouterr().out  # JSON escapes them itself
    assert printable("plain name, ünïcode ok") == "plain name, ünïcode ok"
