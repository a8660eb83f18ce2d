"""Twisted adapters that move gossip bytes: UDP datagrams and push-pull TCP streams.

No protocol logic lives here: datagrams go to a callback, stream messages to a handler, and a
push-pull exchange is one request frame answered by one reply frame.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from gossip.updates import Addr
from gossip.wire import FIRST_FRAME_MAX, Codec, FrameDecoder, Message, WireError

log = Logger()


class DatagramAdapter(DatagramProtocol):
    """Hands every received datagram, with its source address, to ``receive``."""

    def __init__(self, receive: Callable[[bytes, Addr], None]) -> None:
        self._receive = receive

    def datagramReceived(self, datagram: bytes, addr: Addr) -> None:
        self._receive(datagram, (addr[0], addr[1]))


class _PushPullClient(Protocol):
    """Sends one request frame and waits for one reply frame."""

    def __init__(self, codec: Codec, request: bytes) -> None:
        self._decoder: FrameDecoder = codec.frame_decoder()
        self._request = request
        self.reply: defer.Deferred[Message] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.reply.called:
            return
        try:
            messages = self._decoder.feed(data)
        except WireError as e:
            self.reply.errback(Failure(e))
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if messages:
            self.reply.callback(messages[0])
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        if not self.reply.called:
            self.reply.errback(reason)


async def exchange(reactor: IReactorTCP, clock: IReactorTime, codec: Codec, addr: Addr,
                   msg_type: str, body: dict, timeout: float,
                   tls: Callable[[IStreamClientEndpoint], IStreamClientEndpoint] | None = None,
                   ) -> Message:
    """Open a TCP connection to ``addr`` (wrapped by ``tls``, e.g. in TLS), send one frame,
    return the one reply frame.

    Raises WireError for a malformed reply, the connection error if it fails, and
    ``defer.TimeoutError`` after ``timeout`` seconds.
    """
    # The hello lets the server accept a request above its unauthenticated first-frame limit.
    client = _PushPullClient(codec, codec.hello() + codec.frame(msg_type, body))
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
        reactor, addr[0], addr[1], timeout=max(1, int(timeout))
    )
    if tls is not None:
        endpoint = tls(endpoint)
    connecting = connectProtocol(endpoint, client)
    connecting.addTimeout(timeout, clock)
    await connecting
    client.reply.addTimeout(timeout, clock)
    try:
        return await client.reply
    except BaseException:  # timed out or cancelled: do not leave the connection open
        client.transport.abortConnection()  # type: ignore[union-attr]
        raise


class StreamServer(Protocol, TimeoutMixin):
    """Server side of gossip streams: each frame goes to ``handle``; its reply is sent back.

    A peer's RPC server does the same for message types starting with ``gossip.``; the
    standalone agent, which has no RPC server, listens with this.
    """

    idle_timeout = 10.0

    def __init__(self, codec: Codec, handle: Callable[[Message], Message | None],
                 clock: IReactorTime) -> None:
        self._codec = codec
        self._decoder = codec.frame_decoder(FIRST_FRAME_MAX)
        self._handle = handle
        self.callLater = clock.callLater  # TimeoutMixin schedules through this

    def connectionMade(self) -> None:
        self.setTimeout(self.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        try:
            for msg in self._decoder.feed(data):
                reply = self._handle(msg)
                if reply is not None:
                    self.transport.write(  # type: ignore[union-attr]
                        self._codec.frame(reply.type, reply.body))
        except WireError as e:
            log.info("dropping gossip stream: {reason}", reason=e.reason)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        self.setTimeout(None)

    def timeoutConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


class StreamServerFactory(Factory):
    """Builds a StreamServer per TCP connection."""

    def __init__(self, codec: Codec, handle: Callable[[Message], Message | None],
                 clock: IReactorTime) -> None:
        self._args = (codec, handle, clock)

    def buildProtocol(self, addr: object) -> StreamServer:
        return StreamServer(*self._args)
