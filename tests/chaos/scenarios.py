"""The chaos scenarios: a cluster shape, a workload shape and a fault schedule.

A scenario's `step` is one fault round, fault and recovery both, drawn from the scheduler's
`random.Random(seed)`: the sequence of faults (which peers, which signals, how long they last)
is the same for a seed, whatever the timing of the workload. The only choices that depend on
timing are the victim of the upload-kill and isolated-coordinator scenarios when it is "the
peer coordinating the upload".

Scenarios marked `netns` need the namespace network (`tests.chaos.netns`); `clocks` runs the
first so many peers under libfaketime (which slows a peer down several times, so the soak
gives one peer a fake clock), `disk` gives every peer a data directory on a tmpfs of that size;
`spares` are declared peers that start outside the cluster (they join, and leavers return).
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
DEAD_AFTER = 4.0  # --dead-after of the scenarios that keep a peer down past it
HORIZON = 30.0  # --horizon of the soak: a peer away longer is forgotten, rebuilt when back
BRIEF = 3.0  # seconds of faults the newer scenarios get in `./dev test`
DELETES = (0.4, 0.7)  # a worker's mix with 30% deletes (tombstones for the collector to purge)
SHORT_GC = ("--gc-interval", "2", "--gc-grace", "5", "--anti-entropy-interval", "2")


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
    netns: bool = False  # needs the namespace network
    loopback: bool = False  # runs on 127.0.0.1 only
    clocks: int = 0  # the first so many peers on a wall clock the faults can step
    disk: str | None = None  # every peer's data directory on a tmpfs of this size
    spares: int = 0  # declared peers that start outside the cluster
    settle: float = 2.0  # seconds of reads through every peer after convergence
    mix: tuple[float, float] = (0.5, 0.85)  # a worker's put share, then put + get share
    check_space: bool = False  # stored block bytes must come down to what the live files need
    steady: bool = False  # no peer may be declared dead or stall (no fault justifies it)
    brief: float = 7.0  # seconds of faults in `./dev test`


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


def _others(chaos: Chaos, name: str) -> list[str]:
    return [n for n in chaos.faults.names if n != name]


def _uploading(chaos: Chaos, wait: float = 15.0) -> str | None:
    """The peer a big upload is streaming through right now (waits up to `wait` s for one)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        uploading = next((w.uploading for w in chaos.workers if w.uploading), None)
        if uploading:
            return uploading
        time.sleep(0.02)
    return None


def partition_majority(chaos: Chaos) -> None:
    """Split the peers into a majority and a minority that cannot reach each other, then heal."""
    names = list(chaos.faults.names)
    chaos.rng.shuffle(names)
    minority = names[: chaos.rng.randint(1, max(1, (len(names) - 1) // 2))]
    majority = [n for n in names if n not in minority]
    chaos.faults.partition(sorted(majority), sorted(minority))
    _hold(chaos, 1.0, 8.0)
    chaos.faults.heal_network()


def isolate_coordinator(chaos: Chaos) -> None:
    """While a big upload streams, cut its coordinator (now and then another peer) off from
    every other peer (the client still reaches it), then heal."""
    hold = chaos.rng.uniform(1.0, 6.0)
    delay = chaos.rng.uniform(0.05, 1.0)
    coordinator_cut = chaos.rng.random() < 0.75
    other = chaos.rng.choice(chaos.faults.names)
    uploading = _uploading(chaos)
    victim = uploading if coordinator_cut and uploading else other
    time.sleep(delay)
    chaos.faults.partition([victim], _others(chaos, victim))
    time.sleep(hold)
    chaos.faults.heal_network()


def bridge(chaos: Chaos) -> None:
    """Two sides that cannot reach each other, both reaching a third peer in the middle."""
    names = list(chaos.faults.names)
    chaos.rng.shuffle(names)
    middle, rest = names[0], names[1:]
    cut = chaos.rng.randint(1, len(rest) - 1)
    chaos.faults.partition(sorted(rest[:cut]), sorted(rest[cut:]))
    chaos.faults.record("bridge", [middle])
    _hold(chaos, 1.0, 8.0)
    chaos.faults.heal_network()


def one_way(chaos: Chaos) -> None:
    """A hears B but B does not hear A (or hears a share of A's packets), then heal."""
    a, b = chaos.rng.sample(chaos.faults.names, 2)
    chaos.faults.one_way(a, b, chaos.rng.choice([100, 100, 80]))
    _hold(chaos, 1.0, 8.0)
    chaos.faults.heal_network()


def lossy_links(chaos: Chaos) -> None:
    """Random loss (5-40% of packets) on a few links at once, then heal."""
    names = chaos.faults.names
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    for a, b in chaos.rng.sample(pairs, chaos.rng.randint(1, len(pairs))):
        chaos.faults.lossy(a, b, chaos.rng.randint(5, 40))
    _hold(chaos, 1.0, 8.0)
    chaos.faults.heal_network()


def flapping(chaos: Chaos) -> None:
    """One peer's link goes down and up again and again, for 0.1-1.5 s each time."""
    victim = chaos.rng.choice(chaos.faults.names)
    for _ in range(chaos.rng.randint(2, 8)):
        chaos.faults.link(victim, False)
        _hold(chaos, 0.1, 1.5)
        chaos.faults.link(victim, True)
        _hold(chaos, 0.1, 1.5)


def network(chaos: Chaos) -> None:
    """Any of the network fault rounds, chosen at random."""
    chaos.rng.choice(
        [partition_majority, isolate_coordinator, bridge, one_way, lossy_links, flapping]
    )(chaos)


def clock_steps(chaos: Chaos) -> None:
    """A peer's wall clock jumps hours behind for longer than the stall a steady scenario
    allows (a timer on the wall clock would stop; libfaketime takes up to 2 s to see a step),
    then hours ahead, then now and then once or twice more either way."""
    stepped = sorted(set(chaos.faults.clocks) & set(chaos.faults.names))
    if not stepped:  # the peer with a fake clock left the cluster (the soak)
        return
    victim = chaos.rng.choice(stepped)
    for sign, hold in ((-1, (15.0, 17.0)), (1, (0.5, 2.0))):
        chaos.faults.step_clock(victim, sign * round(chaos.rng.uniform(1.0, 6.0) * 3600))
        _hold(chaos, *hold)
    for _ in range(chaos.rng.randint(0, 2)):
        hours = chaos.rng.choice([-1, 1]) * chaos.rng.uniform(1.0, 6.0)
        chaos.faults.step_clock(victim, round(hours * 3600))
        _hold(chaos, 0.5, 3.0)
    chaos.faults.step_clock(victim, 0)


def disk_full(chaos: Chaos) -> None:
    """A peer's disk fills up under load, stays full a while, then is freed."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.fill_disk(victim)
    _hold(chaos, 1.0, 6.0)
    chaos.faults.free_disk(victim)


def grow_shrink(chaos: Chaos) -> None:
    """Grow the cluster by one spare up to all peers, then shrink it by graceful leaves (SIGTERM)
    down to three, and again: the peers that left come back with their data."""
    faults = chaos.faults
    absent = sorted(faults.absent)
    if absent and (len(faults.names) <= 3 or chaos.rng.random() < 0.5):
        faults.join(chaos.rng.choice(absent))
    else:
        faults.leave(chaos.rng.choice(faults.names))
    faults.wait_converged()


def dead_and_back(chaos: Chaos) -> None:
    """SIGKILL a peer and keep it down past --dead-after (the ring drops it), then restart it."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.kill([victim])
    chaos.faults.wait_dead(victim)
    _hold(chaos, DEAD_AFTER + 1.0, DEAD_AFTER + 4.0)
    chaos.faults.restart([victim])


def wipe_rejoin(chaos: Chaos) -> None:
    """SIGKILL a peer, wipe its data directory, restart it under the same name (a new disk)."""
    victim = chaos.rng.choice(chaos.faults.names)
    chaos.faults.kill([victim])
    chaos.faults.wipe(victim)
    _hold(chaos, 0.5, 3.0)
    chaos.faults.restart([victim])


def membership(chaos: Chaos) -> None:
    """Any of the membership rounds, chosen at random."""
    chaos.rng.choice([grow_shrink, dead_and_back, wipe_rejoin])(chaos)


def soak(chaos: Chaos) -> None:
    """Any fault round of any kind: processes, network, clocks, disks, membership."""
    chaos.rng.choice([kill_restart, freeze, graceful, network, clock_steps, disk_full, membership])(
        chaos
    )


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
            loopback=True,  # its bursts go to 127.0.0.1 ports
        ),
        Scenario(
            "partition",
            "a majority and a minority cut off from each other, then healed",
            partition_majority,
            peers=4,
            netns=True,
            brief=BRIEF,
        ),
        Scenario(
            "isolated-coordinator",
            "the coordinator of a 4-8 MiB upload cut off from the other peers mid-stream",
            isolate_coordinator,
            workers=2,
            big_uploaders=1,
            netns=True,
            brief=BRIEF,
        ),
        Scenario(
            "bridge",
            "two sides that cannot reach each other, both reaching a peer in the middle",
            bridge,
            netns=True,
            brief=BRIEF,
        ),
        Scenario("one-way", "A hears B, B does not hear A", one_way, netns=True, brief=BRIEF),
        Scenario(
            "lossy",
            "5-40% random packet loss on some links (nftables numgen)",
            lossy_links,
            netns=True,
            brief=BRIEF,
        ),
        Scenario(
            "flapping",
            "a peer's link down and up every 0.1-1.5 s",
            flapping,
            netns=True,
            brief=BRIEF,
        ),
        Scenario(
            "clock",
            "p1's wall clock hours off, stepped back and forth; nobody dead, nothing stalled",
            clock_steps,
            clocks=1,
            steady=True,
            extra=("--anti-entropy-interval", "1"),
            brief=BRIEF,
        ),
        Scenario(
            "disk-full",
            "every data directory on a 160 MiB tmpfs; one fills up, then is freed",
            disk_full,
            disk="160M",
            extra=SHORT_GC,
            brief=BRIEF,
        ),
        Scenario(
            "grow-shrink",
            "grow 3 -> 5 one spare at a time, shrink 5 -> 3 by graceful leaves, under load",
            grow_shrink,
            spares=2,
            mix=DELETES,
            extra=SHORT_GC,
            brief=BRIEF,
        ),
        Scenario(
            "dead-return",
            f"a peer down past --dead-after {DEAD_AFTER:g} s (removed from the ring), then back",
            dead_and_back,
            peers=4,
            mix=DELETES,
            extra=(*SHORT_GC, "--dead-after", str(DEAD_AFTER)),
            brief=BRIEF,
        ),
        Scenario(
            "wipe-rejoin",
            "a peer's data directory wiped; it rejoins under the same name",
            wipe_rejoin,
            peers=4,
            mix=DELETES,
            extra=SHORT_GC,
            brief=BRIEF,
        ),
        Scenario(
            "soak",
            "long run (use --duration 3600): every fault kind, short --gc-grace, deletes and "
            "rewrites of few paths; stored block bytes must come back to the live files' need",
            soak,
            peers=4,
            spares=1,
            keys=8,
            netns=True,
            clocks=1,
            disk="256M",
            settle=5.0,
            mix=(0.45, 0.65),
            check_space=True,
            # A peer that left (a shrink) and stays out holds every collection back until it
            # is away past the horizon: with the default day, space never came back (an hour
            # soak filled every disk). Longer than any outage a fault round makes, shorter than
            # the wait for space at the end, so returning peers are rebuilt now and then.
            extra=(*SHORT_GC, "--dead-after", str(DEAD_AFTER), "--horizon", str(HORIZON)),
            brief=5.0,
        ),
    ]
}
