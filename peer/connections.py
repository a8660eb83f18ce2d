"""Caps on the connections one listener holds: in all, and from any one client address.

Every accepted connection costs a peer buffers and a file descriptor before the client has
proved anything, so each listener (peer RPC, the HTTP API) takes at most `total` connections at
once and at most `per_host` from one address; one more is closed as soon as it is accepted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.protocols import policies

MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_HOST = 256  # a local test cluster's peers and clients share 127.0.0.1


class ConnectionLimit(policies.WrappingFactory):
    """Serves `factory`'s protocol while under the caps; refuses (closes) connections above."""

    def __init__(
        self,
        factory: Any,
        total: int = MAX_CONNECTIONS,
        per_host: int = MAX_CONNECTIONS_PER_HOST,
    ) -> None:
        super().__init__(factory)
        self.total = total
        self.per_host = per_host
        self.refused = 0
        self._hosts: dict[Any, str] = {}  # protocol wrapper -> its client's host
        self._per_host: dict[str, int] = {}

    def buildProtocol(self, addr: IAddress) -> Any:
        host = str(getattr(addr, "host", addr))
        if len(self._hosts) >= self.total or self._per_host.get(host, 0) >= self.per_host:
            self.refused += 1
            return None
        wrapper = super().buildProtocol(addr)
        if wrapper is not None:
            self._hosts[wrapper] = host
            self._per_host[host] = self._per_host.get(host, 0) + 1
        return wrapper

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        host = self._hosts.pop(p, None)
        if host is not None:
            left = self._per_host[host] - 1
            if left:
                self._per_host[host] = left
            else:
                del self._per_host[host]

    @property
    def open(self) -> int:
        """Connections held now."""
        return len(self._hosts)
