"""BulkTLSProtocol over in-memory transports: how many calls a large write and a large read
make (each call on either side costs Python work per TLS record)."""

from __future__ import annotations

from pathlib import Path

import trustme
from twisted.internet import protocol
from twisted.internet.testing import StringTransport

from peer.tls import BulkTLSFactory, PeerTls
from tests.unit.peer.test_tls import files_for


class Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class CountingTransport(StringTransport):
    """A StringTransport that counts write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def connected(tmp_path: Path):  # type: ignore[no-untyped-def]
    """(client TLS protocol, its transport, server TLS protocol, server app), handshaken."""
    ca = trustme.CA()
    tls = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    app = Recorder()
    serving = BulkTLSFactory(tls.peer_server(), False, protocol.Factory.forProtocol(lambda: app))
    dialling = BulkTLSFactory(tls.peer_client("p1"), True, protocol.Factory.forProtocol(Recorder))
    server, client = serving.buildProtocol(None), dialling.buildProtocol(None)
    server_wire, client_wire = CountingTransport(), CountingTransport()
    server.makeConnection(server_wire)
    client.makeConnection(client_wire)
    pump(client, client_wire, server, server_wire)
    return client, client_wire, server, app


def pump(a, a_wire, b, b_wire) -> None:  # type: ignore[no-untyped-def]
    """Move bytes both ways until neither side has anything more to say."""
    for _ in range(20):
        moved = False
        for wire, other in ((a_wire, b), (b_wire, a)):
            data = wire.value()
            if data:
                wire.clear()
                other.dataReceived(data)
                moved = True
        if not moved:
            return


def test_a_large_write_goes_to_the_transport_as_one_piece(tmp_path: Path) -> None:
    client, client_wire, server, app = connected(tmp_path)
    client_wire.writes = 0
    frame = bytes(range(256)) * 4096  # 1 MiB: 64 records
    client.write(frame)
    assert client_wire.writes == 1
    server.dataReceived(client_wire.value())
    assert b"".join(app.received) == frame


def test_what_one_network_read_decrypts_to_is_delivered_in_one_call(tmp_path: Path) -> None:
    client, client_wire, server, app = connected(tmp_path)
    client_wire.clear()
    payload = b"z" * (64 * 1024)  # four records
    client.write(payload)
    app.received.clear()
    server.dataReceived(client_wire.value())
    assert app.received == [payload]
