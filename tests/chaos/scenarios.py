"""The chaos scenarios: a cluster shape, a workload shape and a fault schedule.

A scenario's `step` is one fault round, fault and recovery both, drawn from the scheduler's
`random.Random(seed)`: the sequence of faults (which peers, which signals, how long they last)
is the same for a seed, whatever the timing of the workload. The only choice that depends on
timing is the upload-kill scenario's victim when it is "the peer coordinating the upload".
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.chaos.faults import Faults
from tests.chaos.hostile import Burst
from tests.chaos.workload import Worker

N, W = 3, 2  # the cluster defaults every scenario runs with


@dataclass
class Chaos:
    """What a fault step may touch: the faults, the seeded generator, the workload, the
    hostile-input sender (for the hostile scenario) and the ports of each peer."""

    faults: Faults
    rng: random.Random
    workers: list[Worker]
    burst: Burst
    ports: dict[str, tuple[int, int]]


Step = Callable[[Chaos], None]


@dataclass(frozen=True)
class Scenario:
    """A named chaos scenario."""

    name: str
    description: str
    step: Step
    peers: int = 3
    workers: int = 4
    big_uploaders: int = 0
    keys: int = 12
    cluster_key: bool = False
    pause: tuple[float, float] = (0.3, 1.5)
    extra: tuple[str, ...] = ()  # more `qfs peer` flags


def _hold(chaos: Chaos, low: float, high: float) -> None:
    time.sleep(chaos.rng.uniform(low, high))


def kill_restart(chaos: Chaos) -> None:
    """SIGKILL one peer, keep it down a while, restart it."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.kill([victim])
    _hold(chaos, 0.5, 4.0)
    chaos.faults.restart([victim])


def freeze(chaos: Chaos) -> None:
    """SIGSTOP one peer (long enough, sometimes, to be declared dead), then SIGCONT it."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.freeze([victim])
    _hold(chaos, 0.5, 7.0)
    chaos.faults.thaw([victim])


def rolling_restart(chaos: Chaos) -> None:
    """Restart every peer in turn (SIGTERM or SIGKILL), waiting for convergence in between."""
    for victim in chaos.faults.names:
        signum = chaos.rng.choice([signal.SIGTERM, signal.SIGKILL])
        chaos.faults.kill([victim], signum)
        _hold(chaos, 0.1, 1.5)
        chaos.faults.restart([victim])
        chaos.faults.wait_converged()


def kill_during_upload(chaos: Chaos) -> None:
    """While a big file is being uploaded, SIGKILL its coordinator or another peer."""
    coordinator_dies = chaos.rng.random() < 0.5
    delay = chaos.rng.uniform(0.05, 1.2)
    other = chaos.rng.choice(chaos.faults.names)
    deadline = time.monotonic() + 15
    uploading = None
    while uploading is None and time.monotonic() < deadline:
        uploading = next((w.uploading for w in chaos.workers if w.uploading), None)
        time.sleep(0.02)
    time.sleep(delay)
    victim = uploading if coordinator_dies and uploading else other
    chaos.faults.kill([victim])
    _hold(chaos, 0.5, 3.0)
    chaos.faults.restart([victim])


def _take_down_together(
    chaos: Chaos, least: int, most: int, freeze_share: float, hold: tuple[float, float]
) -> None:
    """Kill or freeze between `least` and `most` peers at once, hold, then recover them."""
    count = chaos.rng.randint(least, most)
    victims = chaos.rng.sample(chaos.faults.names, count)
    frozen = [v for v in victims if chaos.rng.random() < freeze_share]
    killed = [v for v in victims if v not in frozen]
    if frozen:
        chaos.faults.freeze(frozen)
    if killed:
        chaos.faults.kill(killed)
    _hold(chaos, *hold)
    chaos.faults.thaw(frozen)
    chaos.faults.restart(killed)


def kill_up_to_n_minus_w(chaos: Chaos) -> None:
    """Kill or freeze up to N-W peers at once (writes must keep succeeding), then recover."""
    _take_down_together(chaos, 1, N - W, 0.4, (0.5, 5.0))


def kill_majority(chaos: Chaos) -> None:
    """Kill (or freeze) more than N-W peers at once (writes fail with 503), then recover."""
    _take_down_together(chaos, N - W + 1, min(N, len(chaos.faults.names)), 0.3, (0.5, 3.0))


def mixed(chaos: Chaos) -> None:
    """Any of the other fault rounds, chosen at random."""
    chaos.rng.choice([kill_restart, freeze, kill_up_to_n_minus_w, kill_majority, graceful])(chaos)


def graceful(chaos: Chaos) -> None:
    """SIGTERM one peer (a graceful leave), restart it."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.kill([victim], signal.SIGTERM)
    _hold(chaos, 0.2, 2.0)
    chaos.faults.restart([victim])


def hostile_input(chaos: Chaos) -> None:
    """A burst of garbage at every port of random peers; now and then a peer is killed too."""
    rng, burst = chaos.rng, chaos.burst
    for _ in range(rng.randrange(5, 25)):
        victim = rng.choice(chaos.faults.serving() or chaos.faults.names)
        rpc, http = chaos.ports[victim]
        kind = rng.randrange(3)
        if kind == 0:
            burst.rpc(rpc)
        elif kind == 1:
            burst.gossip(rpc)
        else:
            burst.http(f"http://127.0.0.1:{http}")
    chaos.faults.record("hostile burst", [], sent=burst.sent)
    if rng.random() < 0.15:
        kill_restart(chaos)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("kill-restart", "SIGKILL one peer at a time and restart it", kill_restart),
        Scenario("freeze", "SIGSTOP one peer for up to 7 s, then SIGCONT", freeze),
        Scenario(
            "rolling-restart", "restart every peer in turn, SIGTERM or SIGKILL", rolling_restart
        ),
        Scenario(
            "upload-kill",
            "SIGKILL the coordinator or a replica during 4-8 MiB uploads",
            kill_during_upload,
            workers=2,
            big_uploaders=1,
        ),
        Scenario(
            "minority",
            "4 peers (sloppy quorum, hinted handoff): kill or freeze up to N-W at once",
            kill_up_to_n_minus_w,
            peers=4,
        ),
        Scenario("majority", "kill or freeze more than N-W peers at once", kill_majority),
        Scenario("mixed", "4 peers, any fault round at random", mixed, peers=4),
        Scenario(
            "gc-pressure",
            "4 peers, garbage collection and anti-entropy every second or two, kills and freezes",
            kill_up_to_n_minus_w,
            peers=4,
            extra=("--gc-interval", "1", "--gc-grace", "10", "--anti-entropy-interval", "2"),
        ),
        Scenario(
            "hostile",
            "garbage on RPC, gossip and HTTP ports under load (cluster key set)",
            hostile_input,
            cluster_key=True,
            pause=(0.1, 0.5),
        ),
    ]
}
