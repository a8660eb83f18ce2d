"""Peer TLS contexts, handshaking in memory (no sockets, no reactor): who gets through."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trustme
from OpenSSL import SSL

from peer.tls import PEER_MIN_VERSION, PeerTls, TlsError, TlsFiles


def files_for(folder: Path, ca: trustme.CA, name: str) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(name, common_name=name)
    files = TlsFiles(folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
    ca.cert_pem.write_to_path(str(files.ca))
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    return files


def handshake(client: SSL.Connection, server: SSL.Connection) -> bool:
    """Pump bytes between two in-memory connections; True if both finished the handshake."""
    client.set_connect_state()
    server.set_accept_state()
    done = {id(client): False, id(server): False}
    for _ in range(20):
        for side, other in ((client, server), (server, client)):
            if not done[id(side)]:
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error:
                    return False
            with contextlib.suppress(SSL.WantReadError):
                other.bio_write(side.bio_read(65536))
        if all(done.values()):
            # the client's certificate reaches the server after the client finished (TLS 1.3)
            try:
                server.recv(1)
            except SSL.WantReadError:
                return True
            except SSL.Error:
                return False
    return False


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_peers_of_one_ca_connect_and_the_dialled_name_is_checked(tmp_path: Path, ca) -> None:
    p1 = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    p2 = PeerTls(files_for(tmp_path / "p2", ca, "p2"))
    assert p1.name == "p1"
    server = p1.peer_server()
    assert handshake(p2.peer_client("p1").clientConnectionForTLS(None),
                     server.serverConnectionForTLS(None))
    assert handshake(p2.peer_client(None).clientConnectionForTLS(None),
                     server.serverConnectionForTLS(None))
    # p1's certificate answering where p3 was dialled: the client refuses it
    assert not handshake(p2.peer_client("p3").clientConnectionForTLS(None),
                         server.serverConnectionForTLS(None))


def test_the_tls_version_between_peers(tmp_path: Path, ca) -> None:
    p1 = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    client = p1.peer_client("p1").clientConnectionForTLS(None)
    server = p1.peer_server().serverConnectionForTLS(None)
    assert handshake(client, server)
    assert client.get_protocol_version_name() == (
        "TLSv1.3" if PEER_MIN_VERSION == SSL.TLS1_3_VERSION else "TLSv1.2"
    )


def test_a_certificate_of_another_ca_is_refused_both_ways(tmp_path: Path, ca) -> None:
    p1 = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    outsider = PeerTls(files_for(tmp_path / "out", trustme.CA(), "p1"))
    assert not handshake(outsider.peer_client(None).clientConnectionForTLS(None),
                         p1.peer_server().serverConnectionForTLS(None))
    assert not handshake(p1.peer_client("p1").clientConnectionForTLS(None),
                         outsider.peer_server().serverConnectionForTLS(None))


def test_a_peer_client_without_a_certificate_is_refused(tmp_path: Path, ca) -> None:
    p1 = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    anonymous = SSL.Context(SSL.TLS_METHOD)
    assert not handshake(SSL.Connection(anonymous, None),
                         p1.peer_server().serverConnectionForTLS(None))
    # the HTTPS API asks clients for nothing
    assert handshake(SSL.Connection(anonymous, None),
                     p1.https_server().serverConnectionForTLS(None))


def test_reload_uses_new_files_and_keeps_the_old_ones_when_broken(tmp_path: Path, ca) -> None:
    files = files_for(tmp_path / "p1", ca, "p1")
    tls = PeerTls(files)
    before = tls.describe()["serial"]
    assert tls.reload() is False
    files_for(tmp_path / "p1", ca, "p1")  # a renewed certificate in place of the old
    assert tls.reload() is True
    assert tls.describe()["serial"] != before
    files.key.write_text("garbage")
    assert tls.reload() is False
    assert tls.describe()["serial"] != before  # still the renewed one, still serving
    with pytest.raises(TlsError, match="missing"):
        PeerTls(TlsFiles(tmp_path / "none.crt", files.cert, files.key))
    other = files_for(tmp_path / "other", trustme.CA(), "p1")
    with pytest.raises(TlsError, match="not issued by"):
        PeerTls(TlsFiles(files.ca, other.cert, other.key))


def test_aes_128_gcm_is_chosen_whatever_order_the_client_offers(tmp_path: Path, ca) -> None:
    """OpenSSL's default client order puts AES-256-GCM first; the server's order wins."""
    p1 = PeerTls(files_for(tmp_path / "p1", ca, "p1"))
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    assert handshake(client, p1.https_server().serverConnectionForTLS(None))
    assert client.get_cipher_name() == "TLS_AES_128_GCM_SHA256"
    old = SSL.Context(SSL.TLS_METHOD)
    old.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = SSL.Connection(old, None)
    assert handshake(client, p1.https_server().serverConnectionForTLS(None))
    assert client.get_cipher_name() == "ECDHE-ECDSA-AES128-GCM-SHA256"
    client = p1.peer_client("p1").clientConnectionForTLS(None)
    assert handshake(client, p1.peer_server().serverConnectionForTLS(None))
    assert client.get_cipher_name() == "TLS_AES_128_GCM_SHA256"
