"""What an unauthenticated client can make a real peer spend: bodies, frames, connections,
slow headers, metrics labels. Each probe fails on a peer without the limits."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import httpx
import pytest

from gossip.wire import DEFAULT_MAX_FRAME, FIRST_FRAME_MAX, Codec
from peer.connections import MAX_CONNECTIONS_PER_HOST
from tests.security.conftest import (
    IDLE_TIMEOUT,
    Target,
    healthz_seconds,
    open_files_under,
    rss_bytes,
)

MiB = 1024 * 1024


def http_socket(target: Target) -> socket.socket:
    port = int(target.url().rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the peer sends until it closes the connection, and how long that took;
    socket.timeout when it is still open after `limit` seconds."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def test_a_100_mib_body_to_healthz_is_refused_before_it_is_read(target: Target) -> None:
    with http_socket(target) as sock:
        sock.sendall(
            b"POST /healthz HTTP/1.1\r\nHost: p1\r\nContent-Length: %d\r\n\r\n" % (100 * MiB)
        )
        sock.sendall(b"x" * 65536)
        assert open_files_under(target.pid(), target.tmp) == []  # nothing spooled
        answer, _ = read_until_closed(sock, 2)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"payload_too_large" in answer
    assert list(target.tmp.iterdir()) == []


@pytest.mark.parametrize("size", [100 * MiB, 60_000, 1])
def test_an_unauthenticated_upload_is_answered_401_without_its_body(
    target: Target, size: int
) -> None:
    """Before: an upload of up to 64 KiB was read whole before the token check."""
    with http_socket(target) as sock:
        sock.sendall(b"PUT /v1/files/up HTTP/1.1\r\nHost: p1\r\nContent-Length: %d\r\n\r\n" % size)
        answer, seconds = read_until_closed(sock, 2)
    assert answer.startswith(b"HTTP/1.1 401")
    assert seconds < 1.5


@pytest.mark.parametrize("framing", ["Content-Length: 60000", "Transfer-Encoding: chunked"])
def test_an_unauthenticated_json_request_is_answered_before_its_body(
    target: Target, framing: str
) -> None:
    """Before: a chunked JSON body was read (up to 64 KiB) before the token check."""
    with http_socket(target) as sock:
        sock.sendall(b"POST /v1/copy HTTP/1.1\r\nHost: p1\r\n%s\r\n\r\n" % framing.encode())
        answer, seconds = read_until_closed(sock, 2)
    assert answer.startswith(b"HTTP/1.1 401")
    assert seconds < 1.5


def test_a_chunked_json_body_past_the_limit_is_refused_as_it_is_read(target: Target) -> None:
    chunk = b" " * 4096
    with http_socket(target) as sock:
        sock.sendall(
            b"POST /v1/copy HTTP/1.1\r\nHost: p1\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer %s\r\n\r\n" % target.cluster.token.encode()
        )
        for _ in range(17):  # 68 KiB, past the 64 KiB cap
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer, _ = read_until_closed(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer


def test_json_routes_still_work_with_a_token(target: Target) -> None:
    with target.cluster.client("p1") as client:
        client.put("/json/a", b"a")
        client.copy("/json/a", "/json/b")
        client.move("/json/b", "/json/c")
        client.chmod("/json/c", "0600")
        assert client.get_bytes("/json/c") == b"a"
        assert client.stat("/json/c")["mode"] == "0600"


def test_partial_rpc_frames_cost_no_memory(target: Target) -> None:
    before = rss_bytes(target.pid())
    address = ("127.0.0.1", target.rpc_port())
    sockets = [socket.create_connection(address, timeout=5) for _ in range(8)]
    try:
        for sock in sockets:  # a frame as large as allowed, announced before any MAC is checked
            with contextlib.suppress(OSError):
                sock.sendall(struct.pack(">I", DEFAULT_MAX_FRAME) + b"x" * (4 * MiB))
        time.sleep(0.3)
        assert rss_bytes(target.pid()) - before < 4 * MiB
        for sock in sockets:
            _, seconds = read_until_closed(sock, 2)
            assert seconds < 0.5  # refused at the length prefix
    finally:
        for sock in sockets:
            sock.close()


def test_a_stalled_rpc_frame_is_closed_after_the_idle_timeout(target: Target) -> None:
    with socket.create_connection(("127.0.0.1", target.rpc_port()), timeout=5) as sock:
        sock.sendall(struct.pack(">I", FIRST_FRAME_MAX // 2) + b"x" * 1000)
        received, seconds = read_until_closed(sock, IDLE_TIMEOUT + 3)
    assert received == b""
    assert IDLE_TIMEOUT - 0.2 < seconds < IDLE_TIMEOUT + 2


def test_a_slowloris_client_is_closed_at_the_header_deadline(target: Target) -> None:
    with http_socket(target) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: p1\r\n")
        started = time.monotonic()
        closed_after = None
        for _ in range(40):  # one header byte every 0.1 s would hold twisted's idle timer
            try:
                sock.sendall(b"X")
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
    assert closed_after is not None, "still open after 4 s of trickled headers"
    assert closed_after < IDLE_TIMEOUT + 1.5
    assert healthz_seconds(target.url()) < 0.1


def refused(target: Target, listener: str) -> float:
    text = httpx.get(target.url() + "/metrics", timeout=10).text
    wanted = f'qfs_connections_refused_total{{listener="{listener}"}}'
    return float(next(line for line in text.splitlines() if line.startswith(wanted)).split()[-1])


def closed_at_once(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_per_client_address_are_capped(target: Target) -> None:
    """Held RPC connections (each opened with a valid hello, so no deadline closes them)
    fill p1's cap for 127.0.0.1, where the other peers connect from too."""
    hello = Codec(target.key).hello()
    before = refused(target, "rpc")
    held = []
    try:
        while len(held) <= MAX_CONNECTIONS_PER_HOST:
            sock = socket.create_connection(("127.0.0.1", target.rpc_port()), timeout=5)
            held.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(hello)
            if len(held) > MAX_CONNECTIONS_PER_HOST - 16 and closed_at_once(sock):
                break
        else:
            raise AssertionError(f"{len(held)} connections from one address all accepted")
    finally:
        for sock in held:
            sock.close()
    assert refused(target, "rpc") > before
    assert healthz_seconds(target.url()) < 0.1


def test_unknown_paths_do_not_grow_metrics(target: Target) -> None:
    metrics = target.url() + "/metrics"
    with httpx.Client(base_url=target.url(), timeout=10) as client:
        assert client.get("/nowhere").status_code == 404
        before = client.get(metrics).text.splitlines()
        for i in range(1000):
            assert client.get(f"/probe-{i}").status_code == 404
        after = client.get(metrics).text.splitlines()
    assert len(after) == len(before)
    assert 'qfs_http_requests_total{route="unknown",status="404"}' in "\n".join(after)
