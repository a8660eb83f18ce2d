"""The client's TLS socket: one recv takes every record that has arrived, up to what is asked."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from peer.client.tls_socket import RecordBatchingSocket, client_tls_context

RECORD = 16 * 1024  # TLS's largest record: what one SSL_read returns at most


@pytest.fixture
def connected(tmp_path: Path) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """(client, server): a TLS connection over a socketpair, the client's context ours."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("peer.test").configure_cert(server_context)
    left, right = socket.socketpair()
    server = server_context.wrap_socket(right, server_side=True, do_handshake_on_connect=False)
    handshake = threading.Thread(target=server.do_handshake)
    handshake.start()
    client = client_tls_context(str(ca_file)).wrap_socket(left, server_hostname="peer.test")
    handshake.join()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def test_a_read_takes_every_record_already_arrived(connected) -> None:
    client, server = connected
    assert isinstance(client, RecordBatchingSocket)
    payload = bytes(range(256)) * 256  # 64 KiB: four records
    server.sendall(payload)
    assert client.recv(len(payload)) == payload


def test_a_read_takes_no_more_than_asked_and_the_rest_follows(connected) -> None:
    client, server = connected
    server.sendall(b"a" * RECORD + b"b" * RECORD)
    assert client.recv(RECORD + 10) == b"a" * RECORD + b"b" * 10
    assert client.recv(RECORD) == b"b" * (RECORD - 10)


def test_the_end_after_data_comes_after_the_data(connected) -> None:
    client, server = connected
    server.sendall(b"x" * 20_000)
    server.setblocking(False)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()  # sends close_notify, the end of the stream (then waits for the reply)
    assert client.recv(65536) == b"x" * 20_000
    assert client.recv(65536) == b""


def test_a_read_with_a_timeout_still_waits_for_the_first_record(connected) -> None:
    client, server = connected
    client.settimeout(5.0)
    later = threading.Timer(0.05, server.sendall, args=(b"late",))
    later.start()
    assert client.recv(65536) == b"late"
    assert client.gettimeout() == 5.0
    later.join()
