"""The client library against an in-memory fake peer: URLs, headers, streaming, error mapping."""

from __future__ import annotations

import io
import json

import blake3
import httpx
import pytest

from peer.client.api_client import (
    CHUNK_SIZE,
    DEFAULT_PEER,
    Client,
    Conflict,
    FileInfo,
    QfsError,
    format_mode,
    normalize_path,
    printable,
)
from tests.unit.peer.client.fake_peer import FakePeer, StoredFile

SIBLINGS = [
    {"version": "va", "size": 3, "blake3": "a" * 64, "mtime": 1},
    {"version": "vb", "size": 4, "blake3": "b" * 64, "mtime": 2},
]


@pytest.fixture
def peer() -> FakePeer:
    return FakePeer()


@pytest.fixture
def client(peer: FakePeer) -> Client:
    return Client(transport=peer)


class ReadLog(io.BytesIO):
    """A file that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(-1 if size is None else size)
        return super().read(size)


class Pipe(io.RawIOBase):
    """A readable stream that cannot seek, like stdin from a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


def failing(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


def answering(response: httpx.Response) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: response)


# Paths and URLs


@pytest.mark.parametrize(
    ("given", "expected"),
    [("a/b", "/a/b"), ("/a/b", "/a/b"), ("/a//b/", "/a/b"), ("", "/"), ("/", "/")],
)
def test_normalize_path_gives_one_canonical_form(given: str, expected: str) -> None:
    assert normalize_path(given) == expected


@pytest.mark.parametrize("bad", ["a/../b", "..", "./a", "/a/."])
def test_dot_segments_are_refused_before_any_request(peer: FakePeer, bad: str) -> None:
    with pytest.raises(ValueError, match=r"'\.' and '\.\.'"):
        Client(transport=peer).put(bad, b"x")
    assert peer.seen == []


def test_each_segment_is_percent_encoded_as_utf8(client: Client, peer: FakePeer) -> None:
    client.put("dir with space/ünï?#%.txt", b"x")
    assert peer.last.raw_path == "/v1/files/dir%20with%20space/%C3%BCn%C3%AF%3F%23%25.txt"
    assert "/dir with space/ünï?#%.txt" in peer.files


def test_relative_and_absolute_paths_name_the_same_file(client: Client, peer: FakePeer) -> None:
    client.put("a/b", b"1")
    client.put("/a/b", b"2")
    assert {s.raw_path for s in peer.seen} == {"/v1/files/a/b"}


def test_root_listing_uses_the_bare_route(client: Client, peer: FakePeer) -> None:
    client.ls()
    assert peer.last.raw_path == "/v1/dirs/"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("localhost:8002", "http://localhost:8002"), ("https://h:1/", "https://h:1")],
)
def test_base_url_gets_a_scheme_and_loses_its_slash(given: str, expected: str) -> None:
    assert Client(given).base_url == expected


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://", "http://h:port"])
def test_bad_base_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bad peer URL"):
        Client(bad)


def test_default_peer() -> None:
    assert Client().base_url == DEFAULT_PEER


# Headers and parameters


def test_token_is_sent_as_bearer_and_kept_by_with_base_url(peer: FakePeer) -> None:
    peer.token = "tok"
    client = Client(token="tok", transport=peer)
    other = client.with_base_url("http://127.0.0.1:8002")
    assert other.base_url == "http://127.0.0.1:8002"
    assert other.token == "tok"
    assert other.timeout == client.timeout
    assert other.whoami()["user"] == "alice"
    assert peer.last.headers["authorization"] == "Bearer tok"
    assert "tok" not in repr(client)


def test_no_token_no_authorization_header(client: Client, peer: FakePeer) -> None:
    client.cluster()
    assert "authorization" not in peer.last.headers


def test_put_sends_mode_quorum_and_version_context(client: Client, peer: FakePeer) -> None:
    result = client.put("f", b"data", mode=0o600, version="ctx", w=3)
    assert peer.last.params == {"mode": "0600", "w": "3"}
    assert peer.last.headers["x-qfs-version"] == "ctx"
    assert result["path"] == "/f"
    assert result["size"] == 4
    assert peer.files["/f"].mode == 0o600


def test_put_without_options_sends_no_parameters(client: Client, peer: FakePeer) -> None:
    client.put("f", b"data")
    assert peer.last.params == {}
    assert "x-qfs-version" not in peer.last.headers


def test_get_sends_version_and_read_quorum(client: Client, peer: FakePeer) -> None:
    peer.files["/f"] = StoredFile(b"x", 0o644, "v1")
    client.get_bytes("f", version="v1", r=1)
    assert peer.last.params == {"version": "v1", "r": "1"}


@pytest.mark.parametrize(("mode", "text"), [(0o640, "0640"), ("640", "0640"), ("7", "0007")])
def test_format_mode(mode: int | str, text: str) -> None:
    assert format_mode(mode) == text


@pytest.mark.parametrize("bad", ["u+x", "0o644", "8", "17777", 0o10000, -1, ""])
def test_bad_mode_is_refused(bad: int | str) -> None:
    with pytest.raises(ValueError, match="bad mode"):
        format_mode(bad)


# Streaming


def test_put_streams_a_file_in_chunks_with_its_length(client: Client, peer: FakePeer) -> None:
    data = bytes(range(256)) * (CHUNK_SIZE * 5 // 2 // 256)  # 2.5 chunks
    source = ReadLog(data)
    client.put("big", source)
    assert [len(c) for c in peer.last.chunks] == [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE // 2]
    assert max(source.asked) == CHUNK_SIZE
    assert peer.last.headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in peer.last.headers
    assert peer.files["/big"].data == data


def test_put_streams_bytes_in_chunks_too(client: Client, peer: FakePeer) -> None:
    client.put("big", b"x" * (CHUNK_SIZE + 1))
    assert [len(c) for c in peer.last.chunks] == [CHUNK_SIZE, 1]


def test_put_sends_from_the_current_position(client: Client, peer: FakePeer) -> None:
    source = io.BytesIO(b"headerbody")
    source.seek(6)
    client.put("f", source)
    assert peer.last.headers["content-length"] == "4"
    assert peer.files["/f"].data == b"body"


def test_put_from_a_pipe_is_chunked_without_length(client: Client, peer: FakePeer) -> None:
    client.put("f", io.BufferedReader(Pipe(b"x" * (CHUNK_SIZE + 10))))
    assert "content-length" not in peer.last.headers
    assert peer.last.headers["transfer-encoding"] == "chunked"
    assert len(peer.files["/f"].data) == CHUNK_SIZE + 10


def test_put_reports_progress_per_chunk(client: Client) -> None:
    calls: list[tuple[int, int | None]] = []
    client.put("f", b"x" * (2 * CHUNK_SIZE + 1), progress=lambda *a: calls.append(a))
    total = 2 * CHUNK_SIZE + 1
    assert calls == [(CHUNK_SIZE, total), (2 * CHUNK_SIZE, total), (total, total)]


def test_get_streams_into_the_sink_and_reports_headers(client: Client, peer: FakePeer) -> None:
    data = b"0123456789" * (CHUNK_SIZE // 4)  # 2.5 chunks
    peer.files["/d/f"] = StoredFile(data, 0o751, "v7")
    writes: list[int] = []
    progress: list[tuple[int, int | None]] = []

    class Sink(io.BytesIO):
        def write(self, b: bytes) -> int:  # type: ignore[override]
            writes.append(len(b))
            return super().write(b)

    sink = Sink()
    info = client.get("/d/f", sink, progress=lambda *a: progress.append(a))
    assert sink.getvalue() == data
    assert writes == [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE // 2]
    assert progress[-1] == (len(data), len(data))
    assert info == FileInfo(
        size=len(data),
        etag=peer_etag(data),
        version="v7",
        context="ctx-v7",
        mode=0o751,
    )


def peer_etag(data: bytes) -> str:
    return f'"{blake3.blake3(data).hexdigest()}"'


def test_get_bytes(client: Client, peer: FakePeer) -> None:
    peer.files["/f"] = StoredFile(b"hello", 0o644, "v1")
    assert client.get_bytes("f") == b"hello"


def test_get_of_an_empty_file(client: Client, peer: FakePeer) -> None:
    peer.files["/e"] = StoredFile(b"", 0o644, "v1")
    assert client.get_bytes("e") == b""


def test_missing_mode_header_gives_none() -> None:
    client = Client(transport=answering(httpx.Response(200, content=b"abc")))
    info = client.get("f", io.BytesIO())
    assert info == FileInfo(size=3, etag=None, version=None, context=None, mode=None)


def test_bytes_that_do_not_match_the_etag_are_corrupt() -> None:
    response = httpx.Response(200, content=b"tampered", headers={"ETag": f'"{"0" * 64}"'})
    with pytest.raises(QfsError) as caught:
        Client(transport=answering(response)).get_bytes("f")
    assert (caught.value.status, caught.value.error) == (None, "corrupt")
    assert "/f" in str(caught.value)


# Conflicts and errors


def test_conflict_raises_with_siblings_and_writes_nothing(client: Client, peer: FakePeer) -> None:
    peer.conflicts["/c"] = SIBLINGS
    sink = io.BytesIO()
    with pytest.raises(Conflict) as caught:
        client.get("c", sink)
    conflict = caught.value
    assert (conflict.status, conflict.error) == (300, "conflict")
    assert conflict.path == "/c"
    assert conflict.version == "ctx-both"
    assert conflict.siblings == SIBLINGS
    assert str(conflict) == "300 conflict: /c has 2 concurrent versions"
    assert sink.getvalue() == b""


def test_a_conflict_is_resolved_by_writing_with_its_context(client: Client, peer: FakePeer) -> None:
    peer.conflicts["/c"] = SIBLINGS
    with pytest.raises(Conflict) as caught:
        client.get_bytes("c")
    client.put("c", b"merged", version=caught.value.version)
    assert peer.last.headers["x-qfs-version"] == "ctx-both"
    assert client.get_bytes("c") == b"merged"


def test_json_error_maps_to_one_line(client: Client) -> None:
    body = {"error": "unavailable", "detail": "quorum not met:\n1 of 2  replicas acknowledged"}
    client = Client(transport=answering(httpx.Response(503, json=body)))
    with pytest.raises(QfsError) as caught:
        client.put("f", b"x")
    error = caught.value
    assert (error.status, error.error) == (503, "unavailable")
    assert str(error) == "503 unavailable: quorum not met: 1 of 2 replicas acknowledged"


def test_not_found(client: Client) -> None:
    with pytest.raises(QfsError) as caught:
        client.get_bytes("nope")
    assert caught.value.status == 404
    assert str(caught.value) == "404 not_found: no file /nope"


def test_plain_text_error_keeps_its_first_line() -> None:
    response = httpx.Response(502, text="upstream down\nmore\n")
    with pytest.raises(QfsError, match=r"^502 bad gateway: upstream down$"):
        Client(transport=answering(response)).stat("f")


def test_html_error_gives_the_reason_only() -> None:
    response = httpx.Response(404, html="<html><body>No Such Resource</body></html>")
    with pytest.raises(QfsError, match=r"^404 not found$"):
        Client(transport=answering(response)).ls("/")


def test_success_without_json_is_a_bad_response() -> None:
    with pytest.raises(QfsError, match=r"200 bad response: GET /v1/stat/f did not answer JSON"):
        Client(transport=answering(httpx.Response(200, text="ok"))).stat("f")


def test_listing_without_entries_is_a_bad_response() -> None:
    with pytest.raises(QfsError, match="answered without 'entries'"):
        Client(transport=answering(httpx.Response(200, json={}))).ls("/")


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "unreachable"),
        (httpx.ConnectTimeout("timed out"), "unreachable"),
        (httpx.ReadTimeout(""), "timeout"),
        (httpx.RemoteProtocolError("peer closed connection"), "connection lost"),
    ],
)
def test_transport_failures_have_no_status(exc: Exception, error: str) -> None:
    client = Client("http://127.0.0.1:9", transport=failing(exc))
    with pytest.raises(QfsError) as caught:
        client.cluster()
    assert (caught.value.status, caught.value.error) == (None, error)
    assert "http://127.0.0.1:9" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_closed_port_is_unreachable() -> None:
    with pytest.raises(QfsError) as caught, Client("http://127.0.0.1:9", timeout=5) as client:
        client.cluster()
    assert caught.value.error == "unreachable"


def test_healthy(client: Client) -> None:
    assert client.healthy()
    assert not Client(transport=answering(httpx.Response(503))).healthy()
    assert not Client(transport=failing(httpx.ConnectError("refused"))).healthy()


# Namespace, cluster and tokens


def test_listing(client: Client, peer: FakePeer) -> None:
    peer.files["/d/f"] = StoredFile(b"abc", 0o640, "v1")
    peer.dirs |= {"/d", "/d/sub"}
    names = {(e["name"], e["type"]) for e in client.ls("d")}
    assert names == {("f", "file"), ("sub", "dir")}
    assert client.list_dir("/d")["path"] == "/d"


def test_mkdir_and_rmdir_flags(client: Client, peer: FakePeer) -> None:
    client.mkdir("a/b", parents=True)
    assert (peer.last.method, peer.last.raw_path, peer.last.params) == (
        "PUT",
        "/v1/dirs/a/b",
        {"parents": "1"},
    )
    client.mkdir("c")
    assert peer.last.params == {}
    client.rmdir("a", recursive=True)
    assert (peer.last.method, peer.last.params) == ("DELETE", {"recursive": "1"})
    client.rmdir("c")
    assert peer.last.params == {}


def test_move_and_copy_send_normalized_paths(client: Client, peer: FakePeer) -> None:
    peer.files["/a"] = StoredFile(b"x", 0o644, "v1")
    assert client.copy("a", "b/") == {"path": "/b"}
    assert json.loads(peer.last.body) == {"from": "/a", "to": "/b", "overwrite": False}
    with pytest.raises(QfsError, match="409 exists"):
        client.move("a", "b")
    assert client.move("a", "/b", overwrite=True) == {"path": "/b"}
    assert peer.last.raw_path == "/v1/move"
    assert json.loads(peer.last.body)["overwrite"] is True


def test_chmod_and_chown_patch_stat(client: Client, peer: FakePeer) -> None:
    peer.files["/f"] = StoredFile(b"x", 0o644, "v1")
    assert client.chmod("f", 0o600)["mode"] == "0600"
    assert (peer.last.method, peer.last.raw_path) == ("PATCH", "/v1/stat/f")
    assert json.loads(peer.last.body) == {"mode": "0600"}
    client.chown("f", "bob", "dev")
    assert json.loads(peer.last.body) == {"owner": "bob", "group": "dev"}
    client.chown("f", None, "dev")
    assert json.loads(peer.last.body) == {"group": "dev"}
    with pytest.raises(ValueError, match="owner, a group or both"):
        client.chown("f", None)


def test_stat_and_cluster(client: Client, peer: FakePeer) -> None:
    peer.files["/f"] = StoredFile(b"x", 0o644, "v1")
    assert client.stat("/f")["blocks"][0]["holders"] == ["p1", "p2"]
    cluster = client.cluster()
    assert cluster["self"] == "p1"
    assert cluster["config"]["n"] == 3


def test_rm(client: Client, peer: FakePeer) -> None:
    peer.files["/f"] = StoredFile(b"x", 0o644, "v1")
    client.rm("f")
    assert (peer.last.method, peer.last.raw_path) == ("DELETE", "/v1/files/f")
    assert "/f" not in peer.files


def test_tokens(client: Client, peer: FakePeer) -> None:
    created = client.token_create("bob", ["dev"], admin=True)
    assert created["token"] == "s3cret"
    assert json.loads(peer.last.body) == {"user": "bob", "groups": ["dev"], "admin": True}
    assert client.token_list()[0]["user"] == "bob"
    client.token_revoke("t/1")
    assert (peer.last.method, peer.last.raw_path) == ("DELETE", "/v1/tokens/t%2F1")
    assert client.whoami() == {"user": "alice", "groups": ["staff"], "admin": True}


def test_client_is_a_context_manager(peer: FakePeer) -> None:
    with Client(transport=peer) as client:
        client.cluster()
    with pytest.raises(RuntimeError):
        client.cluster()


def test_a_token_is_never_sent_in_clear_off_loopback() -> None:
    with pytest.raises(ValueError, match="in clear"):
        Client("http://10.0.0.5:8001", "secret")
    with pytest.raises(ValueError, match="in clear"):
        Client("http://127.0.0.1:8001", "secret").with_base_url("http://peer.example:8002")
    for url in ("http://127.0.0.1:8001", "http://localhost:8001", "http://[::1]:8001"):
        Client(url, "secret").close()
    Client("https://10.0.0.5:8001", "secret").close()
    Client("http://10.0.0.5:8001").close()  # no token: nothing to leak


def test_a_bad_ca_file_is_refused_naming_it(tmp_path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="bad CA file"):
        Client("https://127.0.0.1:8001", ca=str(bad))

@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name-1.txt", "plain name-1.txt"),
        ("ünïcødé 名前", "ünïcødé 名前"),
        ("\x1b[2J\x07\r\n\t\x00", "\\x1b[2J\\x07\\x0d\\x0a\\x09\\x00"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("bidi\u202etxt.exe \u2028", "bidi\\u202etxt.exe \\u2028"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # escaping twice changes nothing
