"""Connection caps of a listener: in all and per client address, freed when connections end."""

from __future__ import annotations

from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from peer.connections import ConnectionLimit


def connect(limit: ConnectionLimit, host: str) -> protocol.Protocol | None:
    wrapper = limit.buildProtocol(IPv4Address("TCP", host, 5000))
    if wrapper is not None:
        wrapper.makeConnection(StringTransport())
    return wrapper


def test_caps_per_host_and_in_all_and_frees_slots_on_close() -> None:
    limit = ConnectionLimit(protocol.Factory.forProtocol(protocol.Protocol), total=4, per_host=2)
    a1, a2 = connect(limit, "10.0.0.1"), connect(limit, "10.0.0.1")
    assert a1 is not None and a2 is not None
    assert connect(limit, "10.0.0.1") is None  # a third from one address
    b1, b2 = connect(limit, "10.0.0.2"), connect(limit, "10.0.0.2")
    assert b1 is not None and b2 is not None
    assert connect(limit, "10.0.0.3") is None  # a fifth in all
    assert (limit.open, limit.refused) == (4, 2)
    a1.connectionLost(protocol.connectionDone)
    assert connect(limit, "10.0.0.3") is not None
    assert connect(limit, "10.0.0.1") is None  # the total is full again
    assert limit.open == 4
