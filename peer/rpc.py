"""Peer-to-peer RPC over TCP, in three layers: frames (the wire codec), calls matched to replies
by id with timeouts, and a table of handlers.

A request is a frame of type METHOD with body ``{"id": n, "args": {...}}``; the answer is
``reply {"id", "result"}`` or ``error {"id", "code", "message"}``. Frames whose type starts with
``gossip.`` belong to the membership protocol (push-pull shares this TCP port) and are handed to
its stream handler instead. A malformed, oversized or unauthenticated frame closes that
connection only; the peer keeps serving everybody else.

Limits on what a connection costs before and after it authenticates: until its first frame has
been verified a connection may not announce a frame above ``wire.FIRST_FRAME_MAX`` (clients
open with ``Codec.hello()``); a connection that has not completed its first frame, or a frame
it started, within ``idle_timeout`` seconds is closed (the deadline runs from the start of the
wait, so trickling bytes does not extend it); an authenticated connection with nothing in
flight that stays silent for ``quiet_timeout`` seconds is closed too (a member that vanished
behind a partition leaves no half-open connection holding a slot for ever; clients stop
reusing a connection well before that, `REUSE_LIMIT`); and at most ``max_in_flight`` requests
of one connection run at once: past that the connection stops being read until some finish.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.wire import FIRST_FRAME_MAX, Codec, Message, WireError
from storage.fsutil import StorageFull

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[dict[str, Any]] | dict[str, Any]]
StreamHandler = Callable[[Message], Awaitable[Message | None] | Message | None]
DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0
IDLE_TIMEOUT = 30.0
QUIET_TIMEOUT = 600.0  # seconds an authenticated connection may sit silent between calls
REUSE_LIMIT = QUIET_TIMEOUT / 2  # a client dials afresh rather than reuse one idle this long
MAX_IN_FLIGHT = 256


def send_small_writes_at_once(transport: Any) -> None:
    """TCP_NODELAY: with Nagle's algorithm a small message written after another waits for
    the peer's delayed ACK (~40 ms), which would dominate every small request."""
    if ITCPTransport.providedBy(transport):
        transport.setTcpNoDelay(True)


def socket_transport(transport: Any) -> Any:
    """The TCP transport under a TLS layer (or `transport` itself): the one whose read and send
    sizes count, as the TLS layer hands on what it is given at once."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


RECEIVE_SIZE = 256 * 1024  # bytes read per system call: blocks arrive in 4 reads, not 16
SEND_SIZE = 1024 * 1024  # bytes per send system call (Twisted's default: 128 KiB)
SMALL_FRAME = 64 * 1024  # frames up to this size never wait behind block frames


@implementer(IPushProducer)
class FrameOutbox:
    """Hands one connection's frames to its transport a block frame at a time.

    A Twisted transport keeps what it is given in a list and, each time what it is sending
    runs low, joins the list into one new bytes object. With a window of 1 MiB block frames
    queued on one connection that is a fresh multi-MiB buffer per join: a copy and a page
    fault per 4 KiB (profiled at ~200 faults per MiB moved on a coordinator). Here a large
    frame waits until the transport has sent what it holds (the transport pauses and resumes
    us as its producer), so it goes out as the bytes object it already is; small frames go
    straight on and never queue behind blocks. The transport sends up to SEND_SIZE per
    system call: each send wakes the receiving peer.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._paused = False
        self._waiting: deque[bytes] = deque()
        socket_transport(transport).SEND_LIMIT = SEND_SIZE
        transport.registerProducer(self, True)

    def send(self, frame: bytes) -> None:
        """Write `frame` now, or once the transport has sent everything before it."""
        if (self._paused or self._waiting) and len(frame) > SMALL_FRAME:
            self._waiting.append(frame)
        else:
            self._transport.write(frame)

    def close(self) -> None:
        """Drop the frames not handed over yet; close after the transport has sent the rest."""
        self._waiting.clear()
        self._transport.unregisterProducer()
        self._transport.loseConnection()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._waiting and not self._paused:
            self._transport.write(self._waiting.popleft())

    def stopProducing(self) -> None:
        self._waiting.clear()


class RpcError(Exception):
    """A call that failed: the remote refused it (`code` from its handler) or transport trouble."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RpcCounters:
    """Totals a peer exports as metrics."""

    def __init__(self) -> None:
        self.bad_frames = 0
        self.requests = 0
        self.errors = 0
        self.timeouts = 0


class RpcServerProtocol(protocol.Protocol):
    """Serves one inbound connection: decodes frames, runs handlers, writes replies."""

    def __init__(
        self,
        codec: Codec,
        handlers: Mapping[str, Handler],
        stream_handler: StreamHandler | None,
        counters: RpcCounters,
        clock: IReactorTime,
        idle_timeout: float = IDLE_TIMEOUT,
        max_in_flight: int = MAX_IN_FLIGHT,
        quiet_timeout: float = QUIET_TIMEOUT,
    ) -> None:
        self._codec = codec
        self._decoder = codec.frame_decoder(FIRST_FRAME_MAX)
        self._handlers = handlers
        self._stream_handler = stream_handler
        self._counters = counters
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._quiet_timeout = quiet_timeout
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._queued: deque[Message] = deque()  # decoded, waiting for a dispatch slot
        self._dispatching = False  # inside _run_queued's loop
        self._reading = True
        self._deadline: IDelayedCall | None = None
        self._quiet = False  # whether the armed deadline is the quiet one

    def connectionMade(self) -> None:
        send_small_writes_at_once(self.transport)
        socket_transport(self.transport).bufferSize = RECEIVE_SIZE
        self._outbox = FrameOutbox(self.transport)
        self._watch()

    def dataReceived(self, data: bytes) -> None:
        expected = self._decoder.buffered + len(data)
        try:
            messages = self._decoder.feed(data)
        except WireError as e:
            self._counters.bad_frames += 1
            log.info("dropping RPC connection from %s: %s", self.transport.getPeer(), e.reason)
            self._close()
            return
        if self._decoder.buffered < expected:  # a frame completed: the next one gets its own time
            self._cancel_deadline()
        self._queued.extend(messages)
        self._run_queued()
        self._watch()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.connected = False
        self._queued.clear()
        self._cancel_deadline()

    def _run_queued(self) -> None:
        """Dispatch queued messages while slots are free. A dispatch that finishes at once
        calls `_finished` from inside this loop: that nested call returns here at once and
        the loop takes the next message, so a burst costs no stack depth."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._queued and self._in_flight < self._max_in_flight:
                self._in_flight += 1
                done = defer.ensureDeferred(self._dispatch(self._queued.popleft()))
                done.addBoth(self._finished)
        finally:
            self._dispatching = False
        if self._queued and self._reading:
            self._reading = False
            self.transport.pauseProducing()

    def _finished(self, result: object) -> None:
        self._in_flight -= 1
        if not self.connected:
            return
        self._run_queued()
        if not self._queued and not self._reading:
            self._reading = True
            self.transport.resumeProducing()
        self._watch()

    def _watch(self) -> None:
        """Arm the deadline while the connection owes us a frame: before its first one, or
        partway through one. It runs from the start of that wait; bytes do not extend it. An
        authenticated connection with nothing in flight gets the quiet deadline instead."""
        owes = not self._decoder.verified or self._decoder.buffered
        idle = not self._in_flight and not self._queued
        if owes and idle:
            if self._deadline is None or self._quiet:
                self._arm(self._idle_timeout, self._timed_out, quiet=False)
        elif idle:
            if self._deadline is None or not self._quiet:
                self._arm(self._quiet_timeout, self._went_quiet, quiet=True)
        elif not self._decoder.buffered:
            self._cancel_deadline()

    def _arm(self, seconds: float, expire: Callable[[], None], quiet: bool) -> None:
        self._cancel_deadline()
        self._quiet = quiet
        self._deadline = self._clock.callLater(seconds, expire)

    def _went_quiet(self) -> None:
        self._deadline = None
        log.debug(
            "closing RPC connection from %s: silent for %gs",
            self.transport.getPeer(),
            self._quiet_timeout,
        )
        self._close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        self._counters.timeouts += 1
        log.info(
            "closing RPC connection from %s: no complete frame within %gs",
            self.transport.getPeer(),
            self._idle_timeout,
        )
        self._close()

    def _close(self) -> None:
        self._queued.clear()
        self._cancel_deadline()
        self._outbox.close()

    async def _dispatch(self, message: Message) -> None:
        if message.type.startswith("gossip."):
            await self._dispatch_stream(message)
            return
        self._counters.requests += 1
        try:
            call_id = message.field("id", int)
            args = message.field("args", dict)
        except WireError as e:
            self._counters.bad_frames += 1
            self._send("error", {"id": -1, "code": "bad_request", "message": e.reason})
            return
        handler = self._handlers.get(message.type)
        if handler is None:
            self._reply_error(call_id, "unknown_method", f"no such method {message.type!r}")
            return
        try:
            result = handler(Message(message.type, args))
            if isinstance(result, Awaitable):
                result = await result
        except RpcError as e:
            self._reply_error(call_id, e.code, e.message)
        except WireError as e:
            self._reply_error(call_id, "bad_request", e.reason)
        except StorageFull as e:  # this peer's disk: the caller counts it as a failed replica
            self._reply_error(call_id, "storage_full", str(e))
        except Exception:
            log.exception("RPC handler %s failed", message.type)
            self._reply_error(call_id, "internal", f"{message.type} failed on this peer")
        else:
            self._send("reply", {"id": call_id, "result": result})

    async def _dispatch_stream(self, message: Message) -> None:
        if self._stream_handler is None:
            self._close()
            return
        try:
            reply = self._stream_handler(message)
            if isinstance(reply, Awaitable):
                reply = await reply
        except WireError as e:  # a malformed membership message: bad input, not our crash
            self._counters.bad_frames += 1
            log.info("refusing %s from %s: %s", message.type, self.transport.getPeer(), e.reason)
            self._send("error", {"id": -1, "code": "bad_request", "message": e.reason})
            self._close()
            return
        except Exception:
            log.exception("gossip stream handler failed on %s", message.type)
            self._close()
            return
        if reply is not None:
            self._send(reply.type, reply.body)

    def _reply_error(self, call_id: int, code: str, text: str) -> None:
        self._counters.errors += 1
        self._send("error", {"id": call_id, "code": code, "message": text})

    def _send(self, type: str, body: dict[str, Any]) -> None:
        if self.transport is not None and self.connected:
            self._outbox.send(self._codec.frame(type, body))


class RpcServerFactory(protocol.Factory):
    """Builds a server protocol per connection, all sharing one handler table."""

    def __init__(
        self,
        codec: Codec,
        handlers: Mapping[str, Handler],
        stream_handler: StreamHandler | None = None,
        *,
        clock: IReactorTime,
        idle_timeout: float = IDLE_TIMEOUT,
        max_in_flight: int = MAX_IN_FLIGHT,
        quiet_timeout: float = QUIET_TIMEOUT,
    ) -> None:
        self.codec = codec
        self.handlers = handlers
        self.stream_handler = stream_handler
        self.counters = RpcCounters()
        self._limits = (clock, idle_timeout, max_in_flight, quiet_timeout)

    def buildProtocol(self, addr: Any) -> RpcServerProtocol:
        return self.protocol_with(self.stream_handler)

    def protocol_with(self, stream_handler: StreamHandler | None) -> RpcServerProtocol:
        """A server protocol of this factory whose stream messages go to `stream_handler`."""
        return RpcServerProtocol(
            self.codec, self.handlers, stream_handler, self.counters, *self._limits
        )


class RpcClientProtocol(protocol.Protocol):
    """One outbound connection: sends calls and matches replies to them by id."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._decoder = codec.frame_decoder()
        self._pending: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.closed = False

    def connectionMade(self) -> None:
        send_small_writes_at_once(self.transport)
        self.outbox = FrameOutbox(self.transport)
        self.outbox.send(self._codec.hello())  # opens the server's limit on frame sizes

    def call(self, method: str, args: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        call_id = next(self._ids)
        result: defer.Deferred[dict[str, Any]] = defer.Deferred(
            lambda _: self._pending.pop(call_id, None)
        )
        self._pending[call_id] = result
        self.outbox.send(self._codec.frame(method, {"id": call_id, "args": args}))
        return result

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except WireError as e:
            self._fail_all(RpcError("bad_reply", e.reason))
            self.outbox.close()
            return
        for message in messages:
            self._resolve(message)

    def _resolve(self, message: Message) -> None:
        try:
            call_id = message.field("id", int)
            waiting = self._pending.pop(call_id, None)
            if waiting is None:
                return
            if message.type == "reply":
                waiting.callback(message.field("result", dict))
            elif message.type == "error":
                code = message.field("code", str)
                waiting.errback(RpcError(code, message.field("message", str)))
            else:
                waiting.errback(RpcError("bad_reply", f"unexpected reply type {message.type!r}"))
        except WireError as e:
            self._fail_all(RpcError("bad_reply", e.reason))
            self.outbox.close()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed = True
        self._fail_all(RpcError("connection_lost", reason.getErrorMessage()))

    def _fail_all(self, error: RpcError) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(error)


class RpcClient:
    """Calls to one remote peer over one lazily (re)connected TCP connection; `tls` wraps the
    TCP endpoint (in mutual TLS: peer.tls)."""

    def __init__(
        self,
        reactor: Any,
        codec: Codec,
        host: str,
        port: int,
        tls: Callable[[IStreamClientEndpoint], IStreamClientEndpoint] | None = None,
    ) -> None:
        self._reactor: IReactorTCP & IReactorTime = reactor  # type: ignore[valid-type]
        self._codec = codec
        self._tls = tls
        self.host = host
        self.port = port
        self._protocol: RpcClientProtocol | None = None
        self._waiters: list[defer.Deferred[RpcClientProtocol]] = []
        self._last_used = 0.0

    async def call(
        self, method: str, args: dict[str, Any], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Run `method` on the remote peer; RpcError on refusal, timeout or lost connection."""
        connection = await self._connection()
        self._last_used = self._reactor.seconds()
        pending = connection.call(method, args)
        pending.addTimeout(timeout, self._reactor)
        try:
            return await pending
        except defer.TimeoutError:
            # A connection that went silent (a partition drops packets, it sends no reset) is
            # not trusted again: the next call connects afresh instead of timing out too.
            if connection is self._protocol:
                self._protocol = None
                if connection.transport is not None:
                    connection.transport.abortConnection()
            raise RpcError("timeout", f"{method} got no reply within {timeout:g}s") from None
        finally:
            self._last_used = self._reactor.seconds()

    async def _connection(self) -> RpcClientProtocol:
        if self._protocol is not None and not self._protocol.closed:
            if self._reactor.seconds() - self._last_used < REUSE_LIMIT:
                return self._protocol
            self.close()  # the server may be closing it as quiet: never race that
            self._protocol = None
        waiter: defer.Deferred[RpcClientProtocol] = defer.Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
                self._reactor, self.host, self.port, timeout=CONNECT_TIMEOUT
            )
            if self._tls is not None:
                endpoint = self._tls(endpoint)
            connectProtocol(endpoint, RpcClientProtocol(self._codec)).addBoth(self._connected)
        return await waiter

    def _connected(self, result: RpcClientProtocol | Failure) -> None:
        waiters, self._waiters = self._waiters, []
        if isinstance(result, RpcClientProtocol):
            self._protocol = result
            for waiter in waiters:
                waiter.callback(result)
            return
        error = RpcError("unreachable", f"{self.host}:{self.port}: {result.getErrorMessage()}")
        for waiter in waiters:
            waiter.errback(error)

    def close(self) -> None:
        """Drop the connection (pending calls fail with connection_lost)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.outbox.close()
