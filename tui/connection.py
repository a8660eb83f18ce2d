"""The peer the TUI talks to, and failing over to another live peer when it stops answering.

Failing over sends the bearer token to another address, so only to one the cluster vouches
for: the address the client was pointed at, or the HTTP address of a member that the peer at
that address reported, when that address also passes `vouched`: the same scheme (an https peer
never hands over to http) and a host of the same kind (loopback only for loopback; an IP
address of the same version and scope, private for private and public for public; a host name
in the same domain as the one given). A member name or address injected into gossip can then
neither draw the token to another machine nor to another program listening on this one.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from peer.client.api_client import Client, QfsError

T = TypeVar("T")

PROBE_TIMEOUT = 2.0  # seconds a candidate peer gets to answer /healthz during failover
_STATE_ORDER = {"alive": 0, "suspect": 1}


class NoLivePeer(QfsError):
    """The current peer and every other known peer failed to answer."""

    def __init__(self, failed: str, tried: list[str]) -> None:
        if tried:
            detail = f"{failed} does not answer, nor do {', '.join(tried)}"
        else:
            detail = f"{failed} does not answer and no other peer is known yet"
        super().__init__(None, "unreachable", detail)
        self.tried = tried


def _host_kind(host: str) -> tuple[object, ...]:
    """What kind of host `host` is, for `vouched`: loopback, (ip, version, scope) or (name,
    domain); ("refused",) for addresses no peer serves on (unspecified, multicast)."""
    if host.lower() == "localhost":
        return ("loopback",)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        return ("name", name.partition(".")[2] or name)
    if ip.is_loopback:
        return ("loopback",)
    if ip.is_unspecified or ip.is_multicast:
        return ("refused",)
    return ("ip", ip.version, "private" if ip.is_private else "public")


def vouched(origin: str, candidate: str) -> bool:
    """Whether a client pointed at `origin` may send its token to `candidate`, an HTTP address
    the peer at `origin` reported for a member (see the module docstring)."""
    try:
        given, other = urlsplit(origin), urlsplit(candidate)
        hosts = given.hostname, other.hostname
        _ = other.port  # raises for a port that is no number
    except ValueError:  # what a peer reports may be anything
        return False
    if other.scheme != given.scheme or other.username or other.password or not all(hosts):
        return False
    kind = _host_kind(str(hosts[0]))
    return kind != ("refused",) and _host_kind(str(hosts[1])) == kind


class Connection:
    """Runs client operations against the current peer, switching peers on transport failure.

    A QfsError whose ``status`` is None (unreachable, timeout, connection lost) means this peer
    may be gone: the peers of the last member list are probed (alive first, then suspect, then
    the rest) and the first that answers /healthz becomes current, then the operation is run
    once more there. HTTP errors (a status) are answers, never a reason to switch. Only
    addresses the cluster vouches for are candidates (the module docstring). Safe to use from
    several worker threads at once.
    """

    def __init__(self, client: Client, on_switch: Callable[[str, str], None] | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._members: list[dict[str, Any]] = []
        self._origin = client.base_url
        self._vouched = {self._origin}
        """The addresses the token may go to: the given one and those its peer reported."""
        self.on_switch = on_switch
        """Called with (old URL, new URL) from the worker thread that switched."""

    @property
    def client(self) -> Client:
        """The client of the peer currently talked to."""
        return self._client

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def states(self) -> dict[str, str]:
        """Peer name -> state, from the last member list."""
        return {m["name"]: m["state"] for m in self._members}

    def call(self, op: Callable[[Client], T]) -> T:
        """``op(client)``; on a transport failure, fail over and run it once more.

        ``op`` must be safe to run twice (e.g. it reopens the file it uploads).
        """
        client = self._client
        try:
            return op(client)
        except QfsError as error:
            if error.status is not None:
                raise
            return op(self.fail_over(client))

    def cluster(self) -> tuple[str, dict[str, Any]]:
        """(URL of the peer that answered, its ``client.cluster()``) through ``call``.

        The members are remembered for later failovers, unless the answer came from a peer
        this connection has already left (a poll that hung and finished late).
        """
        url, snapshot = self.call(lambda c: (c.base_url, c.cluster()))
        if url == self.base_url:
            self._members = list(snapshot.get("members") or [])
        if url == self._origin:
            reported = {_http_of(m) for m in snapshot.get("members") or []}
            self._vouched = {self._origin} | {u for u in reported if vouched(self._origin, u)}
        return url, snapshot

    def fail_over(self, failed: Client) -> Client:
        """Switch from ``failed`` to the first known peer that answers; raises NoLivePeer."""
        with self._lock:
            if self._client is not failed:
                return self._client  # another thread switched already
            tried = []
            for url in self._candidates(failed.base_url):
                tried.append(url)
                candidate = failed.with_base_url(url)
                if candidate.healthy(timeout=PROBE_TIMEOUT):
                    self._client = candidate
                    if self.on_switch is not None:
                        self.on_switch(failed.base_url, url)
                    return candidate
                candidate.close()
            raise NoLivePeer(failed.base_url, tried)

    def _candidates(self, failed_url: str) -> list[str]:
        """Vouched addresses to try: the last member list's, alive first, then the rest."""
        ranked = sorted(self._members, key=lambda m: _STATE_ORDER.get(m.get("state", ""), 2))
        urls: list[str] = []
        for url in [*(_http_of(m) for m in ranked), *sorted(self._vouched)]:
            if url in self._vouched and url != failed_url and url not in urls:
                urls.append(url)
        return urls


def _http_of(member: dict[str, Any]) -> str:
    return str(member.get("http") or "").rstrip("/")
