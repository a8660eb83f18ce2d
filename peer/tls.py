"""TLS for a peer: mutual TLS between peers (RPC and gossip push-pull) and HTTPS for clients.

Every peer holds the cluster CA's certificate and its own certificate and key (issued by `qfs
cluster cert`, common name = the member name). Between peers both sides must present a
certificate the CA signed, or the handshake fails and the connection carries nothing; a peer
dialling a member also checks that the certificate's common name is that member's name, so an
address taken over by another certificate holder gets nothing either, and a push-pull received
must come from the member its connection's certificate names (MemberRpcServerFactory). The
HTTP API serves the same certificate to clients and asks none of them (they authenticate with
bearer tokens).

Peers speak TLS 1.3 to each other (1.2 only where the OpenSSL build has no 1.3); clients may
use 1.2 or later. `reload` re-reads the three files: the contexts are rebuilt and every new
connection uses them, while open connections keep the certificate they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.crypto import Keyring
from gossip.wire import Message, WireError
from peer.rpc import RpcServerFactory, RpcServerProtocol, StreamHandler

log = logging.getLogger(__name__)

PEER_MIN_VERSION = getattr(SSL, "TLS1_3_VERSION", SSL.TLS1_2_VERSION)
CLIENT_MIN_VERSION = SSL.TLS1_2_VERSION
BULK_SIZE = 256 * 1024  # plaintext handed to OpenSSL per call (Twisted's default: 16 KiB)
FLUSH_SIZE = BULK_SIZE + 16 * 1024  # ciphertext read back per call, at least
RECORD = 16 * 1024  # plaintext per TLS record, at most
RECORD_OVERHEAD = 64  # ciphertext bytes a record adds, at most (header, nonce, tag, type)
READ_SIZE = 4 * BULK_SIZE  # plaintext asked per OpenSSL read (one record, 16 KiB, comes back)
PARTIAL_WRITE = 0x1  # SSL_MODE_ENABLE_PARTIAL_WRITE (ssl.h): pyOpenSSL sets it, names it not
# Mozilla's "intermediate" order: AES-128-GCM first (TLS 1.3's mandatory suite; `openssl speed
# -evp` here: 2.7 GB/s against 2.0 for AES-256-GCM, OpenSSL's own first choice). The server's
# order decides, so a default client (Python's ssl, curl) gets it too.
TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
TLS12_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TlsError(ValueError):
    """TLS files that cannot be used; the message names the file and what is wrong."""


def read_keyring(path: Path) -> Keyring:
    """The gossip keyring in `path`; TlsError naming the file if it cannot be used."""
    try:
        return Keyring.loads(path.read_text())
    except FileNotFoundError:
        raise TlsError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise TlsError(f"{path}: {e}") from None


@dataclass(frozen=True)
class TlsFiles:
    """The three files a peer's TLS needs."""

    ca: Path
    cert: Path
    key: Path


def certificate_name(cert: x509.Certificate) -> str | None:
    """The common name of `cert` (a peer certificate's member name), or None."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class _Contexts:
    peer: SSL.Context  # both ends of peer connections
    https: SSL.Context
    name: str | None
    serial: int
    not_after: str


def _context(files: TlsFiles, min_version: int) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(min_version)
    context.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE
    )
    context.set_tls13_ciphersuites(TLS13_SUITES)
    context.set_cipher_list(TLS12_CIPHERS)
    context.clear_mode(PARTIAL_WRITE)  # one write call makes all its records (BulkTLSProtocol)
    context.use_certificate_chain_file(str(files.cert))
    context.use_privatekey_file(str(files.key))
    context.check_privatekey()
    return context


def _load(files: TlsFiles) -> _Contexts:
    for path in (files.ca, files.cert, files.key):
        if not path.is_file():
            raise TlsError(f"{path} is missing")
    try:
        leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    except ValueError as e:
        raise TlsError(f"{files.cert} or {files.ca} is not a PEM certificate: {e}") from None
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as e:
        raise TlsError(f"{files.cert} was not issued by the CA in {files.ca}: {e}") from None
    try:
        peer = _context(files, PEER_MIN_VERSION)
        peer.load_verify_locations(str(files.ca))
        peer.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _chain_only)
        https = _context(files, CLIENT_MIN_VERSION)
    except SSL.Error as e:
        raise TlsError(f"{files.cert} / {files.key} cannot be used: {e}") from None
    return _Contexts(
        peer,
        https,
        certificate_name(leaf),
        leaf.serial_number,
        leaf.not_valid_after_utc.isoformat(),
    )


def _chain_only(connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
                ok: int) -> bool:
    """OpenSSL's verdict on the chain (signed by the cluster CA, in date, right usage)."""
    return bool(ok)


def _member_check(expected: str) -> Callable[..., bool]:
    """A verify callback that also requires the leaf certificate to belong to `expected`."""

    def verify(connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
               ok: int) -> bool:
        if not ok:
            return False
        if depth > 0:
            return True
        name = certificate_name(cert.to_cryptography())
        if name != expected:
            log.warning("refusing a peer certificate for %r where %r was expected", name, expected)
            return False
        return True

    return verify


class PeerTls:
    """The current TLS contexts of one peer, rebuilt from its files by `reload`."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._contexts = _load(files)

    @property
    def name(self) -> str | None:
        """The common name of this peer's certificate."""
        return self._contexts.name

    def describe(self) -> dict[str, Any]:
        """What /v1/cluster shows about the certificate in use."""
        return {"serial": f"{self._contexts.serial:x}", "not_after": self._contexts.not_after}

    def reload(self) -> bool:
        """Re-read the files; True if they changed. A broken set of files is logged and the
        contexts in use are kept (new connections keep working with the old certificate)."""
        try:
            contexts = _load(self.files)
        except TlsError as e:
            log.error("TLS files not reloaded, still using the previous ones: %s", e)
            return False
        changed = contexts.serial != self._contexts.serial
        self._contexts = contexts
        if changed:
            log.info("TLS certificate reloaded (serial %x)", contexts.serial)
        return changed

    def peer_server(self) -> IOpenSSLServerConnectionCreator:
        """For the RPC listener: clients must present a certificate of the cluster CA."""
        return _ServerCreator(self, "peer")

    def https_server(self) -> IOpenSSLServerConnectionCreator:
        """For the HTTP API: serves the peer's certificate, asks none of clients."""
        return _ServerCreator(self, "https")

    def peer_client(self, member: str | None) -> IOpenSSLClientConnectionCreator:
        """For dialling a peer: the server must hold a certificate of the cluster CA, for the
        member `member` (any member when None: a seed known only by its address)."""
        return _ClientCreator(self, member)

    def dial(self, endpoint: IStreamClientEndpoint, member: str | None) -> IStreamClientEndpoint:
        """`endpoint` (TCP to a peer) with mutual TLS on top, checked as `peer_client` says."""
        return _TlsClientEndpoint(endpoint, self.peer_client(member))


def peer_certificate_name(transport: Any) -> str | None:
    """The member name on the certificate the other end of a TLS `transport` presented."""
    cert = transport.getPeerCertificate()
    return None if cert is None else certificate_name(cert.to_cryptography())


class MemberRpcServerFactory(RpcServerFactory):
    """RPC server factory for mutual TLS: a gossip stream message (push-pull) must come
    ``from`` the member whose certificate its connection presented, so one member's
    certificate cannot speak for another in the membership protocol."""

    def buildProtocol(self, addr: Any) -> RpcServerProtocol:
        handler = self.stream_handler
        built: list[RpcServerProtocol] = []

        def checked(message: Message) -> Any:
            claimed = message.body.get("from")
            certified = peer_certificate_name(built[0].transport)
            if claimed != certified:
                raise WireError(
                    f"{message.type} from {str(claimed)[:64]!r} over a connection certified "
                    f"for {certified!r}"
                )
            return handler(message) if handler is not None else None

        checking: StreamHandler = checked
        built.append(self.protocol_with(checking))
        return built[0]


class BulkTLSProtocol(TLSMemoryBIOProtocol):
    """Twisted's TLS protocol, moving bulk data in fewer calls: up to BULK_SIZE of plaintext
    per OpenSSL write and READ_SIZE per read, all the records a write made read back at once,
    and all the records a network read brought delivered to the protocol at once (Twisted: a
    16 KiB record per write, per read and per delivery). Profiled on 1 MiB block frames: the
    Python calls per record, not the cipher, were most of what TLS cost a peer."""

    def _flushReceiveBIO(self) -> None:
        received: list[bytes] = []
        while not self._lostTLSConnection:
            try:
                received.append(self._tlsConnection.recv(READ_SIZE))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._deliver(received)
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except SSL.Error:
                self._deliver(received)
                self._tlsShutdownFinished(Failure())
        self._deliver(received)
        self._flushSendBIO()

    def _deliver(self, received: list[bytes]) -> None:
        """Hand the protocol what one network read decrypted to, in one call (OpenSSL gives
        a record, 16 KiB, per read; a plaintext connection's reads give it up to 64 KiB)."""
        if received and not self._aborted:
            data = received[0] if len(received) == 1 else b"".join(received)
            received.clear()
            ProtocolWrapper.dataReceived(self, data)

    def _write(self, data: bytes) -> None:
        if self._lostTLSConnection:
            return
        view = memoryview(data)
        sent_so_far = 0
        while sent_so_far < len(view):
            try:
                sent = self._tlsConnection.send(view[sent_so_far : sent_so_far + BULK_SIZE])
            except SSL.WantReadError:
                self._bufferedWrite(bytes(view[sent_so_far:]))
                break
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
                break
            sent_so_far += sent
        self._flushSendBIO(sent_so_far + (sent_so_far // RECORD + 1) * RECORD_OVERHEAD)

    def _flushSendBIO(self, size: int = FLUSH_SIZE) -> None:
        """Hand the transport the ciphertext waiting, as one bytes object per write: a
        transport given several pieces joins them into a new buffer (a copy, and page faults)
        where one piece goes out as it is (see peer.rpc.FrameOutbox)."""
        size = max(size, FLUSH_SIZE)
        while True:
            try:
                data = self._tlsConnection.bio_read(size)
            except SSL.WantReadError:
                return
            self.transport.write(data)
            if len(data) < size:
                return


class BulkTLSFactory(TLSMemoryBIOFactory):
    """TLSMemoryBIOFactory building BulkTLSProtocol."""

    protocol = BulkTLSProtocol


@implementer(IStreamClientEndpoint)
class _TlsClientEndpoint:
    """`endpoint` with TLS from `creator` on top (what twisted's wrapClientTLS does, with
    BulkTLSProtocol)."""

    def __init__(self, endpoint: IStreamClientEndpoint,
                 creator: IOpenSSLClientConnectionCreator) -> None:
        self._endpoint = endpoint
        self._creator = creator

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        connecting = self._endpoint.connect(BulkTLSFactory(self._creator, True, factory))
        return connecting.addCallback(lambda protocol: protocol.wrappedProtocol)


@implementer(IOpenSSLServerConnectionCreator)
class _ServerCreator:
    def __init__(self, tls: PeerTls, which: str) -> None:
        self._tls = tls
        self._which = which

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        return SSL.Connection(getattr(self._tls._contexts, self._which), None)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    def __init__(self, tls: PeerTls, member: str | None) -> None:
        self._tls = tls
        self._member = member

    def clientConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._tls._contexts.peer, None)
        if self._member is not None:
            connection.set_verify(
                SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _member_check(self._member)
            )
        return connection
