"""Peer RPC protocols over in-memory transports: calls, replies, errors and garbage."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.test import iosim

from gossip.wire import Codec, Message, WireError
from peer.rpc import RpcClientProtocol, RpcError, RpcServerFactory

CODEC = Codec(b"k" * 32)


def echo(message: Message) -> dict:
    return {"echo": message.body}


async def slow_fail(message: Message) -> dict:
    raise RpcError("not_found", "nothing here")


def crash(message: Message) -> dict:
    raise RuntimeError("bug")


def serve(stream_handler=None) -> tuple[RpcServerFactory, object, StringTransport]:
    factory = RpcServerFactory(
        CODEC, {"echo": echo, "fail": slow_fail, "crash": crash}, stream_handler
    )
    server = factory.buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    return factory, server, transport


def replies(transport: StringTransport) -> list[Message]:
    return CODEC.frame_decoder().feed(transport.value())


def test_a_call_gets_its_reply_over_a_connected_pair() -> None:
    factory = RpcServerFactory(CODEC, {"echo": echo})
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
