"""Hostile input for a running cluster: garbage on the RPC (TCP), gossip (UDP) and HTTP ports.

Every generator draws from the caller's seeded `random.Random`. Nothing sent here is a valid
request that should change data: RPC frames are random, truncated, oversized, signed with a
wrong key, or signed with the right key but malformed (a block whose bytes do not match its
hash, items of the wrong shape); HTTP requests that name a workload key carry an invalid
argument or a truncated body, so if a peer accepted one, its value would surface as a phantom
in the checker. `Burst.failures` collects answers that break "bad input gets a clear error":
a 5xx to an HTTP request, or a peer that stops answering /healthz.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from gossip.wire import Codec, Message

GOSSIP_TYPES = (
    "gossip.ping",
    "gossip.ack",
    "gossip.nack",
    "gossip.pingreq",
    "gossip.gossip",
    "gossip.pushpull",
)
RPC_METHODS = ("block.put", "block.get", "block.has", "record.put", "record.get", "record.range")


def random_cbor_value(rng: random.Random, depth: int = 0) -> Any:
    """A random CBOR-encodable value of any shape (ints, strings, bytes, lists, maps, None)."""
    roll = rng.randrange(8 if depth < 3 else 5)
    if roll == 0:
        return rng.randrange(-(2**63), 2**64)
    if roll == 1:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(40)))
    if roll == 2:
        return rng.randbytes(rng.randrange(64))
    if roll == 3:
        return rng.choice([None, True, False, 0.5, -1])
    if roll == 4:
        return rng.choice(["", "0" * 64, "../../etc/passwd", "h:x:y", "m:/chaos"])
    if roll == 5:
        return [random_cbor_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        rng.choice(["hash", "data", "items", "keys", "prefix", "hashes", "id", "x"]): (
            random_cbor_value(rng, depth + 1)
        )
        for _ in range(rng.randrange(5))
    }


def malformed_rpc_args(rng: random.Random, method: str) -> dict[str, Any]:
    """Arguments for `method` that a correct peer must refuse (and store nothing from)."""
    if method == "block.put":
        data = rng.randbytes(rng.randrange(1, 5000))
        choices = [
            {"hash": os.urandom(32).hex(), "data": data},  # does not match the bytes
            {"hash": "../" * 10 + "x", "data": data},
            {"hash": "A" * 64, "data": data},
            {"hash": 7, "data": data},
            {"data": data},
        ]
        return rng.choice(choices)
    if method == "record.put":
        return rng.choice(
            [
                {"items": "not a list"},
                {"items": [["/x", "not a sibling", None]]},
                {"items": [[7, [{}, b"v"], None]]},
                {"items": [["/x", [{"n": -1}, b"v"], None]]},
                {"items": [["/x", [{"n": 1}, 12], None]]},
                {"items": [["/x", [{"n": 1}, b"v"]]]},
                {"items": [None] * rng.randrange(1, 50)},
            ]
        )
    if method == "record.range":
        return {"prefix": rng.choice(["", 7, None, ["a"]])}
    field = {"block.get": "hash", "block.has": "hashes", "record.get": "keys"}[method]
    bad = rng.choice([7, None, b"x", [1, 2], ["/a", None], {"a": 1}, "0" * 64])
    if (field == "hash") == isinstance(bad, str):
        bad = 7  # a single hash must be a string, a list of them must be a list
    return rng.choice([{field: bad}, {"other": "x"}])


def rpc_call(port: int, codec: Codec, method: str, args: dict[str, Any]) -> Message:
    """One well-formed peer RPC call on a fresh connection; the reply (or error) message."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(codec.frame(method, {"id": 1, "args": args}))
        decoder = codec.frame_decoder()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"{method}: connection closed without a reply")
            messages = decoder.feed(data)
            if messages:
                return messages[0]


@dataclass
class Burst:
    """Sends hostile input to one cluster; `failures` lists what was not refused cleanly."""

    rng: random.Random
    key: bytes | None
    keys: list[str]
    failures: list[dict[str, object]] = field(default_factory=list)
    sent: int = 0

    def rpc(self, port: int) -> None:
        """One hostile TCP connection to a peer's RPC port."""
        rng = self.rng
        wrong = Codec(rng.randbytes(32))
        right = Codec(self.key)
        kind = rng.randrange(7)
        if kind == 0:
            payload = rng.randbytes(rng.randrange(1, 4000))
        elif kind == 1:
            payload = struct.pack(">I", rng.randrange(2**24, 2**32)) + rng.randbytes(100)
        elif kind == 2:
            size = rng.randrange(1, 5000)
            payload = struct.pack(">I", size) + rng.randbytes(rng.randrange(size + 1))
        elif kind == 3:
            method = rng.choice(RPC_METHODS)
            payload = wrong.frame(method, {"id": 1, "args": {"keys": ["/"]}})
        elif kind == 4:
            frame = right.frame("record.get", {"id": 1, "args": {"keys": []}})
            cut = rng.randrange(1, len(frame))
            payload = frame[:cut]
        elif kind == 5:
            body = {rng.choice(["id", "args", "seq", "members"]): random_cbor_value(rng)}
            payload = right.frame(rng.choice([*GOSSIP_TYPES, *RPC_METHODS, "reply", "x"]), body)
        else:
            method = rng.choice(RPC_METHODS)
            args = malformed_rpc_args(rng, method)
            payload = b"".join(
                right.frame(method, {"id": i, "args": args}) for i in range(rng.randrange(1, 4))
            )
        self._send_tcp(port, payload, split=rng.random() < 0.3)

    def _send_tcp(self, port: int, payload: bytes, split: bool) -> None:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=3) as sock,
        ):
            if split:
                for i in range(0, len(payload), 7):
                    sock.sendall(payload[i : i + 7])
            else:
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        self.sent += 1

    def gossip(self, port: int) -> None:
        """A few hostile datagrams to a peer's gossip port."""
        rng = self.rng
        wrong = Codec(rng.randbytes(32))
        right = Codec(self.key)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(rng.randrange(5, 30)):
                kind = rng.randrange(5)
                if kind == 0:
                    datagram = rng.randbytes(rng.randrange(1, 1400))
                elif kind == 1:
                    datagram = b"Q" + rng.randbytes(rng.randrange(0, 1400))
                elif kind == 2:
                    datagram = wrong.encode(rng.choice(GOSSIP_TYPES), {"seq": 1})
                elif kind == 3:
                    body = {"seq": random_cbor_value(rng), "from": random_cbor_value(rng)}
                    datagram = right.encode(rng.choice(GOSSIP_TYPES), body)[:1400]
                else:
                    datagram = rng.randbytes(rng.randrange(1400, 9000))
                with contextlib.suppress(OSError):
                    udp.sendto(datagram, ("127.0.0.1", port))
                self.sent += 1

    def http(self, url: str) -> None:
        """One hostile HTTP request; a 5xx answer, or success for a write that had to be
        refused, is recorded as a failure."""
        rng = self.rng
        key = quote(rng.choice(self.keys))
        kind = rng.randrange(6)
        headers: dict[str, str] = {}
        method = rng.choice(["GET", "DELETE"])
        must_refuse = False
        if kind == 0:
            path = "/v1/files/" + "".join(
                f"%{b:02x}" if rng.random() < 0.5 else chr(rng.randrange(0x21, 0x7F))
                for b in rng.randbytes(rng.randrange(1, 300))
            ).replace("?", "%3f").replace("#", "%23")
        elif kind == 1:
            method, must_refuse = "PUT", True
            path = f"/v1/files{key}?" + rng.choice(["w=0", "w=99", "w=", "w=x", "mode=99999"])
        elif kind == 2:
            method, must_refuse = "PUT", True
            path = f"/v1/files{key}"
            headers["X-Qfs-Version"] = rng.choice(["!!", "A" * 5000, "AAAA", "~~~~"])
        elif kind == 3:
            path = rng.choice(["/v1/stat", "/v1/dirs", "/v1/cluster", "/v1/x", "/metrics"])
            path += "/" + "/".join(rng.choice(["..", ".", "", "%2e%2e", "a"]) for _ in range(4))
            path += rng.choice(["", "?r=-1", "?r=x", "?r=0", "?version=%%%"])
        elif kind == 4:
            self._truncated_put(url, f"/v1/files{key}")
            return
        else:
            path, must_refuse = f"/v1/files{key}", True
            method = rng.choice(["POST", "PATCH", "BREW"])
        try:
            response = httpx.request(
                method, url + path, headers=headers, content=rng.randbytes(8), timeout=10
            )
        except httpx.HTTPError:
            return
        finally:
            self.sent += 1
        problem = None
        if response.status_code >= 500 and response.status_code != 503:
            problem = "server error on bad input"
        elif must_refuse and response.is_success:
            problem = "bad write accepted"
        if problem:
            self.failures.append(
                {
                    "violation": problem,
                    "request": f"{method} {path[:200]}",
                    "headers": {k: v[:80] for k, v in headers.items()},
                    "status": response.status_code,
                    "body": response.text[:300],
                }
            )

    def _truncated_put(self, url: str, path: str) -> None:
        """A PUT whose body stops short of its Content-Length, then the connection closes."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        declared = self.rng.randrange(10, 3_000_000)
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        with (
            contextlib.suppress(OSError),
            socket.create_connection((host, int(port)), timeout=3) as sock,
        ):
            sock.sendall(head + self.rng.randbytes(self.rng.randrange(declared)))
        self.sent += 1
