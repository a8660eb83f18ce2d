"""Peer RPC protocols over in-memory transports: calls, replies, errors and garbage."""

from __future__ import annotations

from twisted.internet import abstract, defer, task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim

from gossip.wire import FIRST_FRAME_MAX, Codec, Message, WireError
from peer.rpc import (
    REUSE_LIMIT,
    FrameOutbox,
    RpcClient,
    RpcClientProtocol,
    RpcError,
    RpcServerFactory,
)

CODEC = Codec(b"k" * 32)


def echo(message: Message) -> dict:
    return {"echo": message.body}


async def slow_fail(message: Message) -> dict:
    raise RpcError("not_found", "nothing here")


def crash(message: Message) -> dict:
    raise RuntimeError("bug")


def gated() -> tuple[list[defer.Deferred], object]:
    """A handler each of whose calls waits for a gate of its own, and those gates (in the
    order the calls were dispatched) for the test to fire."""
    gates: list[defer.Deferred] = []

    async def wait(message: Message) -> dict:
        gate: defer.Deferred = defer.Deferred()
        gates.append(gate)
        await gate
        return {}

    return gates, wait


def serve(
    stream_handler=None, clock: task.Clock | None = None, handlers: dict | None = None, **limits
) -> tuple[RpcServerFactory, object, StringTransport]:
    factory = RpcServerFactory(
        CODEC,
        {"echo": echo, "fail": slow_fail, "crash": crash, **(handlers or {})},
        stream_handler,
        clock=clock or task.Clock(),
        **limits,
    )
    server = factory.buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    return factory, server, transport


def replies(transport: StringTransport) -> list[Message]:
    return CODEC.frame_decoder().feed(transport.value())


def test_a_call_gets_its_reply_over_a_connected_pair() -> None:
    factory = RpcServerFactory(CODEC, {"echo": echo}, clock=task.Clock())
    client = RpcClientProtocol(CODEC)
    server = factory.buildProtocol(None)
    pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client))
    results = []
    client.call("echo", {"x": b"\x00\x01", "n": 3}).addCallback(results.append)
    client.call("echo", {"second": True}).addCallback(results.append)
    pump.flush()
    assert results == [{"echo": {"x": b"\x00\x01", "n": 3}}, {"echo": {"second": True}}]
    assert factory.counters.requests == 2


def test_handler_errors_become_error_replies_with_codes() -> None:
    _factory, server, transport = serve()
    server.dataReceived(CODEC.frame("fail", {"id": 1, "args": {}}))
    server.dataReceived(CODEC.frame("crash", {"id": 2, "args": {}}))
    server.dataReceived(CODEC.frame("nope", {"id": 3, "args": {}}))
    server.dataReceived(CODEC.frame("echo", {"id": "x", "args": {}}))
    got = replies(transport)
    assert [(m.type, m.body.get("code")) for m in got] == [
        ("error", "not_found"),
        ("error", "internal"),
        ("error", "unknown_method"),
        ("error", "bad_request"),
    ]
    assert "bug" not in got[1].body["message"]
    assert transport.connected


def test_garbage_and_wrong_key_close_only_that_connection() -> None:
    for garbage in [
        b"\x00\x00\x00\x05hello",
        Codec(b"o" * 32).frame("echo", {"id": 1, "args": {}}),
    ]:
        factory, server, transport = serve()
        server.dataReceived(garbage)
        assert transport.disconnecting
        assert factory.counters.bad_frames == 1
        assert transport.value() == b""


def test_oversized_frame_is_refused_before_buffering() -> None:
    _factory, server, transport = serve()
    server.dataReceived(b"\xff\xff\xff\xff")
    assert transport.disconnecting


def test_gossip_frames_go_to_the_stream_handler() -> None:
    seen = []

    def handle(message: Message) -> Message:
        seen.append(message)
        return Message("gossip.pushpull.reply", {"members": []})

    _, server, transport = serve(handle)
    server.dataReceived(CODEC.frame("gossip.pushpull", {"members": [1]}))
    assert seen == [Message("gossip.pushpull", {"members": [1]})]
    assert replies(transport) == [Message("gossip.pushpull.reply", {"members": []})]


def test_client_fails_pending_calls_on_lost_connection_and_bad_replies() -> None:
    client = RpcClientProtocol(CODEC)
    client.makeConnection(StringTransport())
    failures = []
    client.call("echo", {}).addErrback(lambda f: failures.append(f.value))
    client.dataReceived(CODEC.frame("error", {"id": 1, "code": "corrupt", "message": "bad"}))
    client.call("echo", {}).addErrback(lambda f: failures.append(f.value))
    client.dataReceived(b"\x00\x00\x00\x03abc")
    assert [type(f) for f in failures] == [RpcError, RpcError]
    assert [f.code for f in failures] == ["corrupt", "bad_reply"]
    lost = RpcClientProtocol(CODEC)
    lost.makeConnection(StringTransport())
    pending = lost.call("echo", {})
    lost.connectionLost()
    failure = []
    pending.addErrback(lambda f: failure.append(f.value.code))
    assert failure == ["connection_lost"]
    assert isinstance(pending, defer.Deferred)


def test_a_malformed_gossip_stream_message_is_refused_and_counted() -> None:
    def reject(message: Message) -> Message:
        raise WireError("gossip.pushpull: members must be a list")

    factory, server, transport = serve(reject)
    server.dataReceived(CODEC.frame("gossip.pushpull", {"members": 7}))
    (reply,) = replies(transport)
    assert reply.type == "error" and "members must be a list" in reply.body["message"]
    assert factory.counters.bad_frames == 1
    assert transport.disconnecting


class Pipe(abstract.FileDescriptor):
    """Twisted's own write buffering (FileDescriptor) over a socket that takes at most
    `room` bytes per write; records the objects it was asked to send."""

    connected = True

    def __init__(self, room: int) -> None:
        super().__init__(reactor=_NoReactor())
        self.room = room
        self.asked: list[object] = []
        self.sent = bytearray()

    def writeSomeData(self, data: bytes) -> int:
        self.asked.append(data)
        taken = bytes(data[: self.room])
        self.sent += taken
        return len(taken)

    def drain(self) -> object:
        """Run write events until the buffer is empty; what the last doWrite returned."""
        result = None
        for _ in range(10_000):
            if not self.writing:
                return result
            result = self.doWrite()
        raise AssertionError("the transport never drained")


class _NoReactor:
    def addWriter(self, selectable: Pipe) -> None:
        selectable.writing = True

    def removeWriter(self, selectable: Pipe) -> None:
        selectable.writing = False

    def addReader(self, selectable: Pipe) -> None:
        pass

    def removeReader(self, selectable: Pipe) -> None:
        pass


def test_block_frames_reach_the_socket_as_they_are_and_small_ones_skip_the_queue() -> None:
    pipe = Pipe(room=100_000)
    outbox = FrameOutbox(pipe)
    blocks = [bytes([i]) * 300_000 for i in range(4)]
    outbox.send(blocks[0])
    outbox.send(blocks[1])
    outbox.send(b"small")
    outbox.send(blocks[2])
    outbox.send(blocks[3])
    pipe.drain()
    assert bytes(pipe.sent) == blocks[0] + b"small" + blocks[1] + blocks[2] + blocks[3]
    # Twisted joins what is queued on a transport into a new buffer; each block went to the
    # socket as the very object it was sent as (the small frame rode along with the first).
    for block in blocks[1:]:
        assert any(asked is block for asked in pipe.asked)


def test_closing_with_blocks_queued_drops_them_and_still_closes() -> None:
    pipe = Pipe(room=100_000)
    outbox = FrameOutbox(pipe)
    first, waiting = b"a" * 300_000, b"b" * 300_000
    outbox.send(first)
    outbox.send(waiting)
    outbox.close()
    closed = pipe.drain()
    assert bytes(pipe.sent) == first
    assert closed is not None and pipe.producer is None


def test_a_large_first_frame_is_refused_before_it_is_buffered() -> None:
    factory, server, transport = serve()
    server.dataReceived(CODEC.frame("echo", {"id": 1, "args": {"x": b"x" * FIRST_FRAME_MAX}})[:9])
    assert transport.disconnecting
    assert factory.counters.bad_frames == 1


def test_after_the_hello_large_frames_are_served() -> None:
    _factory, server, transport = serve()
    server.dataReceived(CODEC.hello())
    server.dataReceived(CODEC.frame("echo", {"id": 1, "args": {"x": b"x" * FIRST_FRAME_MAX}}))
    (reply,) = replies(transport)
    assert reply.body["result"] == {"echo": {"x": b"x" * FIRST_FRAME_MAX}}


def test_the_client_opens_with_a_hello() -> None:
    client = RpcClientProtocol(CODEC)
    transport = StringTransport()
    client.makeConnection(transport)
    assert transport.value() == CODEC.hello()


def test_a_connection_that_never_sends_a_frame_is_closed_after_the_timeout() -> None:
    clock = task.Clock()
    factory, _server, transport = serve(clock=clock, idle_timeout=5)
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert factory.counters.timeouts == 1


def test_trickling_a_partial_frame_does_not_extend_its_deadline() -> None:
    clock = task.Clock()
    _factory, server, transport = serve(clock=clock, idle_timeout=5)
    server.dataReceived(CODEC.hello())
    frame = CODEC.frame("echo", {"id": 1, "args": {"x": b"x" * 100}})
    clock.advance(60)  # an authenticated connection may sit idle between calls
    assert not transport.disconnecting
    for byte in range(20):
        server.dataReceived(frame[byte : byte + 1])
        clock.advance(0.3)
    assert transport.disconnecting


def test_a_steady_stream_of_frames_is_never_cut_off() -> None:
    clock = task.Clock()
    _factory, server, transport = serve(clock=clock, idle_timeout=5)
    server.dataReceived(CODEC.hello())
    frame = CODEC.frame("echo", {"id": 1, "args": {}})
    stream = frame * 40
    for i in range(0, len(stream), 7):  # always partway through some frame
        server.dataReceived(stream[i : i + 7])
        clock.advance(0.5)
    assert not transport.disconnecting
    assert len(replies(transport)) == 40


def test_dispatches_in_flight_are_bounded_and_reading_pauses() -> None:
    gates, wait = gated()
    _factory, server, transport = serve(handlers={"wait": wait}, max_in_flight=3)
    server.dataReceived(b"".join(CODEC.frame("wait", {"id": i, "args": {}}) for i in range(10)))
    assert len(gates) == 3
    assert transport.producerState == "paused"
    while len(gates) < 10:
        gates[len(replies(transport))].callback(None)
        assert len(gates) - len(replies(transport)) <= 3
    for gate in gates[len(replies(transport)) :]:
        gate.callback(None)
    assert transport.producerState == "producing"
    assert len(replies(transport)) == 10


def test_an_authenticated_connection_silent_past_the_quiet_timeout_is_closed() -> None:
    """Before: a connection that had sent one good frame was never closed, so members gone
    behind a partition left half-open connections holding listener slots for good."""
    clock = task.Clock()
    factory, server, transport = serve(clock=clock, idle_timeout=5, quiet_timeout=100)
    server.dataReceived(CODEC.hello())
    clock.advance(60)
    server.dataReceived(CODEC.frame("echo", {"id": 1, "args": {}}))  # a call: quiet from now
    assert len(replies(transport)) == 1
    clock.advance(99)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting
    assert factory.counters.timeouts == 0  # housekeeping, not a misbehaving client


def test_a_client_dials_afresh_rather_than_reuse_a_connection_idle_past_the_reuse_limit() -> None:
    reactor = MemoryReactorClock()
    client = RpcClient(reactor, CODEC, "127.0.0.1", 9)
    transports: list[StringTransport] = []
    protocols = []

    def answered_call(number: int) -> None:
        call = defer.ensureDeferred(client.call("echo", {}))
        if len(reactor.tcpClients) > len(transports):  # it dialled: complete the connection
            protocols.append(reactor.tcpClients[-1][2].buildProtocol(None))
            transports.append(StringTransport())
            protocols[-1].makeConnection(transports[-1])
        protocols[-1].dataReceived(CODEC.frame("reply", {"id": number, "result": {}}))
        assert call.result == {}

    answered_call(1)
    reactor.advance(REUSE_LIMIT - 1)
    answered_call(2)
    assert len(transports) == 1
    reactor.advance(REUSE_LIMIT + 1)
    answered_call(1)  # a new connection numbers its calls from 1
    assert len(transports) == 2
    assert transports[0].disconnecting


def test_a_burst_of_calls_that_finish_at_once_is_served_without_recursion() -> None:
    """Before: each call that finished synchronously dispatched the next queued one from its
    own callback, one stack level per call: a few hundred small frames in one read (the soak
    saw it) ended in RecursionError and an unhandled error on the peer."""
    gates, wait = gated()
    _factory, server, transport = serve(handlers={"wait": wait}, max_in_flight=2)
    count = 5000
    frames = [CODEC.frame("echo", {"id": i, "args": {}}) for i in range(count)]
    server.dataReceived(b"".join(frames))  # every one finishes as it is dispatched
    assert len(replies(transport)) == count
    transport.clear()
    slow = [CODEC.frame("wait", {"id": count + i, "args": {}}) for i in range(2)]
    server.dataReceived(b"".join(slow + frames))  # queued behind two slow calls
    assert replies(transport) == [] and transport.producerState == "paused"
    gates[0].callback(None)  # one slot frees: the whole queue drains through it
    assert len(replies(transport)) == count + 1
    gates[1].callback(None)
    assert len(replies(transport)) == count + 2
    assert transport.producerState == "producing"
