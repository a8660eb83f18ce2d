"""The peer's reactor runs on the monotonic clock (the composition root, peer/node.py): its
timers follow the clock it is given and nothing else, so a wall-clock step (which moves
`time.time` only) fires no timer early and stalls none. tests/integration/test_clock_faults.py
steps a real peer's wall clock."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.selectreactor import SelectReactor

from peer.node import run_on_monotonic_clock


def test_timers_and_looping_calls_follow_the_injected_clock() -> None:
    reactor = SelectReactor()  # a real reactor, never installed nor run
    monotonic = task.Clock()
    run_on_monotonic_clock(reactor, monotonic.seconds)
    fired: list[str] = []
    reactor.callLater(5, fired.append, "suspicion expired")
    loop = task.LoopingCall(fired.append, "probe")
    loop.clock = reactor
    loop.start(1.0, now=False)
    reactor.runUntilCurrent()
    assert fired == []
    assert reactor.timeout() == pytest.approx(1.0)
    monotonic.advance(1.0)
    reactor.runUntilCurrent()
    assert fired == ["probe"]
    monotonic.advance(4.0)
    reactor.runUntilCurrent()
    assert fired == ["probe", "probe", "suspicion expired"]
    loop.stop()


def test_the_clock_cannot_be_replaced_once_something_is_scheduled() -> None:
    reactor = SelectReactor()
    call = reactor.callLater(1, lambda: None)
    with pytest.raises(RuntimeError, match="before anything is scheduled"):
        run_on_monotonic_clock(reactor, task.Clock().seconds)
    call.cancel()
