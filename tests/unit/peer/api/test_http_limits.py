"""The HTTP API's limits before routing and authentication, on twisted.web over an in-memory
transport and a fake clock: body caps by route, the header deadline, bounded metrics labels."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from peer.api.http import (
    HEADER_TIMEOUT,
    MAX_JSON_BODY,
    SMALL_BODY,
    UNKNOWN_ROUTE,
    ApiChannel,
    ApiResource,
    StreamingRequest,
)


class Counting(resource.Resource):
    """Answers with the size of the body it was given."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0

    def render(self, request: server.Request) -> bytes:
        self.rendered += 1
        request.content.seek(0)
        return b"got %d" % len(request.content.read())


def connect(root: resource.Resource, clock: task.Clock) -> tuple[ApiChannel, StringTransport]:
    site = server.Site(root, requestFactory=StreamingRequest, reactor=clock)
    site.protocol = ApiChannel
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def request(method: str, path: str, headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: p\r\n{headers}\r\n".encode()


def test_a_body_announced_past_the_route_limit_is_refused_before_routing() -> None:
    for method, path, limit in [
        ("POST", "/healthz", SMALL_BODY),
        ("GET", "/v1/files/a", SMALL_BODY),
        ("POST", "/v1/copy", MAX_JSON_BODY),
    ]:
        root = Counting()
        channel, transport = connect(root, task.Clock())
        channel.dataReceived(request(method, path, f"Content-Length: {100 * 1024 * 1024}\r\n"))
        assert transport.value().startswith(b"HTTP/1.1 413 "), path
        assert f"at most {limit} bytes".encode() in transport.value()
        assert transport.disconnecting and root.rendered == 0


def test_bodies_within_the_limit_are_served() -> None:
    root = Counting()
    channel, transport = connect(root, task.Clock())
    body = b"x" * SMALL_BODY
    channel.dataReceived(request("POST", "/healthz", f"Content-Length: {len(body)}\r\n") + body)
    assert transport.value().startswith(b"HTTP/1.1 200")
    assert b"got %d" % len(body) in transport.value()


def test_a_chunked_body_is_cut_off_where_it_passes_the_limit() -> None:
    root = Counting()
    channel, transport = connect(root, task.Clock())
    channel.dataReceived(request("DELETE", "/v1/files/a", "Transfer-Encoding: chunked\r\n"))
    chunk = b"x" * 600
    for _ in range(2):
        channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.disconnecting and root.rendered == 0


def test_headers_trickled_byte_by_byte_are_cut_off_at_the_deadline() -> None:
    clock = task.Clock()
    channel, transport = connect(Counting(), clock)
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.5)
        if transport.disconnecting:
            break
    assert transport.disconnecting
    assert clock.seconds() <= HEADER_TIMEOUT + 0.5


def test_each_request_gets_its_own_header_deadline() -> None:
    clock = task.Clock()
    channel, transport = connect(Counting(), clock)
    for _ in range(5):
        clock.advance(HEADER_TIMEOUT * 0.8)
        channel.dataReceived(request("GET", "/healthz"))
    assert not transport.disconnecting
    assert transport.value().count(b"HTTP/1.1 200") == 5
    clock.advance(HEADER_TIMEOUT)  # idle after the last answer
    assert transport.disconnecting


def test_unknown_paths_share_one_metrics_label() -> None:
    counted: list[tuple[str, int]] = []
    api = ApiResource(
        object(),  # type: ignore[arg-type]  # no route that reaches the coordinator is used
        lambda: {},
        lambda: b"",
        on_request=lambda route, status: counted.append((route, status)),
    )
    channel, transport = connect(api, task.Clock())
    for path in ["/nope", "/v1/nope", "/v1/nope/deeper", "/%1B%5B2J" + "x" * 5000, "/healthz"]:
        channel.dataReceived(request("GET", path))
    channel.dataReceived(request("PATCH", "/healthz"))
    assert counted == [(UNKNOWN_ROUTE, 404)] * 4 + [("/healthz", 200), ("/healthz", 405)]
    assert b"x" * 100 not in transport.value()  # the error quotes a short prefix only


class Idle(resource.Resource):
    """Routes a request and never reads its body (an authentication still pending)."""

    isLeaf = True

    def render(self, request: server.Request) -> object:
        return server.NOT_DONE_YET


def test_uploads_and_json_bodies_are_not_read_before_their_route_reads_them() -> None:
    for method, path, size in [("PUT", "/v1/files/big", 100 * 1024 * 1024),
                               ("POST", "/v1/copy", MAX_JSON_BODY)]:  # fmt: skip
        channel, transport = connect(Idle(), task.Clock())
        channel.dataReceived(request(method, path, f"Content-Length: {size}\r\n"))
        assert transport.producerState == "paused", path
        assert not transport.disconnecting
