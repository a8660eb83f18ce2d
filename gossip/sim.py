"""Many members of the real Membership class on one simulated network with one clock.

``python -m gossip.sim --members N [--fail K] [--loss P] [--periods T] [--seed S] --json``

The network loses each datagram with probability ``loss``, delays it uniformly within
``delay``, and drops everything between partition groups; push-pull (TCP) is lossless but
stops at partitions too. Time is simulated, so a run is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gossip.membership import (
    PUSH_PULL,
    Config,
    Effect,
    MemberChanged,
    Membership,
    PushPull,
    Send,
)
from gossip.updates import ALIVE, DEAD, SUSPECT, Addr, Meta
from gossip.wire import Codec, Message

_WAKE = 0
_DELIVER = 1


@dataclass
class Failure:
    """What happened to one failed member: times in seconds, None while not yet seen."""

    member: int
    at: float
    first_suspected: float | None = None
    first_dead: float | None = None
    dead_at: dict[int, float] = field(default_factory=dict)  # observer -> when it saw death


class Simulation:
    """N Membership machines on a simulated lossy network, all driven by one event queue."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.002, 0.010),
        config: Config | None = None,
        bootstrap: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.config = config or Config()
        self.now = 0.0
        codec = Codec()
        self.metas = [Meta(f"id{i}", ("sim", i), ("sim", 10000 + i), 1) for i in range(n)]
        self.members = [
            Membership(f"m{i}", self.metas[i], codec=codec, rng=random.Random(self.rng.random()),
                       now=0.0, config=self.config)
            for i in range(n)
        ]
        if bootstrap:
            roster = [(m.name, m.meta) for m in self.members]
            for m in self.members:
                m.bootstrap(roster, 0.0)
        self.up = [True] * n
        self.group = [0] * n
        self.cut_links: set[tuple[int, int]] = set()  # (from, to) pairs that drop everything
        self.inbound_delay: dict[int, float] = {}  # member -> extra delay of what it receives
        self.failures: dict[int, Failure] = {}
        self.false_positives: list[tuple[float, int, int]] = []  # (when, observer, victim)
        self.false_suspicions = 0
        self.messages = 0
        self.bytes = 0
        self.pushpulls = 0
        self._up_seconds = 0.0  # member-seconds of up time, accumulated at failures
        self._counted_from = 0.0
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self._wake_at: list[float | None] = [None] * n
        for i in range(n):
            self._schedule(i)

    # ---- control ---------------------------------------------------------------------

    def fail(self, i: int) -> None:
        """Crash member ``i``: it stops sending and receiving."""
        self._settle_up_time()
        self.up[i] = False
        self.failures[i] = Failure(i, self.now)

    def partition(self, groups: list[int]) -> None:
        """Only members with the same group number can talk until ``heal``."""
        self.group = list(groups)

    def cut(self, i: int, j: int) -> None:
        """Drop every datagram between ``i`` and ``j`` (both ways); others still reach both."""
        self.cut_links |= {(i, j), (j, i)}

    def heal(self) -> None:
        """End every partition and cut link."""
        self.group = [0] * len(self.members)
        self.cut_links.clear()

    def leave(self, i: int) -> None:
        """Member ``i`` starts a graceful leave."""
        self._route(i, self.members[i].leave(self.now))
        self._schedule(i)

    def restart(self, i: int) -> None:
        """Member ``i`` starts again as a new process: up, knowing nobody, at incarnation 0
        (``join`` it next)."""
        old = self.members[i]
        self.members[i] = Membership(old.name, old.meta, codec=Codec(),
                                     rng=random.Random(self.rng.random()), now=self.now,
                                     config=self.config)
        self._settle_up_time()
        self.up[i] = True
        self._wake_at[i] = None
        self._schedule(i)

    def join(self, i: int, seed: int) -> None:
        """Member ``i`` joins through ``seed`` with a push-pull, as a real member does."""
        self._pushpull(i, self.members[seed].meta.addr, join=True)
        self._schedule(i)

    def run_until(self, t: float) -> None:
        """Process every event up to simulated time ``t``."""
        heap = self._heap
        members = self.members
        while heap and heap[0][0] <= t:
            when, _, kind, i, payload = heapq.heappop(heap)
            self.now = when
            if kind == _WAKE:
                if self._wake_at[i] != when:
                    continue  # superseded by an earlier wake-up
                self._wake_at[i] = None
                if not self.up[i]:
                    continue
                effects = members[i].tick(when)
                if members[i].next_wakeup() <= when:
                    raise RuntimeError(f"m{i} asked to wake again at {when}")
                self._route(i, effects)
            else:
                if not self.up[i]:
                    continue
                msg, src = payload
                self._route(i, members[i].handle(msg, src, when))
            self._schedule(i)
        self.now = t

    # ---- results ---------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Start counting messages and bytes afresh (e.g. after a warm-up)."""
        self._settle_up_time()
        self.messages = self.bytes = self.pushpulls = 0
        self._up_seconds = 0.0

    def member_periods(self) -> float:
        """Member-periods of up time since the counters were reset."""
        self._settle_up_time()
        return self._up_seconds / self.config.probe_interval

    def dead_everywhere(self, victim: int) -> bool:
        """True when every up member (other than the victim) holds ``victim`` dead."""
        f = self.failures[victim]
        return all(j in f.dead_at for j in range(len(self.members)) if self.up[j] and j != victim)

    # ---- internals -------------------------------------------------------------------

    def _settle_up_time(self) -> None:
        self._up_seconds += sum(self.up) * (self.now - self._counted_from)
        self._counted_from = self.now

    def _push(self, when: float, kind: int, i: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, i, payload))

    def _schedule(self, i: int) -> None:
        w = max(self.members[i].next_wakeup(), self.now)
        current = self._wake_at[i]
        if current is None or w < current:
            self._wake_at[i] = w
            self._push(w, _WAKE, i, None)

    def _route(self, i: int, effects: list[Effect]) -> None:
        for e in effects:
            if type(e) is Send:
                self.messages += 1
                self.bytes += e.size
                j = e.addr[1]
                if (self.group[i] != self.group[j] or (self.loss and self.rng.random() < self.loss)
                        or (self.cut_links and (i, j) in self.cut_links)):
                    continue
                d0, d1 = self.delay
                delay = d0 + (d1 - d0) * self.rng.random() + self.inbound_delay.get(j, 0.0)
                self._push(self.now + delay, _DELIVER, j,
                           (Message(e.type, e.body), self.metas[i].addr))
            elif type(e) is PushPull:
                self._pushpull(i, e.addr, join=False)
            elif type(e) is MemberChanged:
                self._observe(i, e)

    def _pushpull(self, i: int, addr: Addr, join: bool) -> None:
        j = addr[1]
        self.pushpulls += 1
        if not self.up[j] or self.group[i] != self.group[j]:
            return  # the connection fails; nothing is exchanged
        a, b = self.members[i], self.members[j]
        reply, effects = b.handle_pushpull(Message(PUSH_PULL, a.pushpull_request(join)), self.now)
        self._route(j, effects)
        self._schedule(j)
        self._route(i, a.merge_pushpull_reply(Message(PUSH_PULL, reply), self.now))

    def _observe(self, observer: int, e: MemberChanged) -> None:
        victim = int(e.member.name[1:])
        state = e.member.state
        f = self.failures.get(victim)
        if f is None:
            if state == DEAD and victim != observer:
                self.false_positives.append((self.now, observer, victim))
            elif state == SUSPECT:
                self.false_suspicions += 1
            return
        if state == SUSPECT and f.first_suspected is None:
            f.first_suspected = self.now
        elif state == DEAD:
            if f.first_dead is None:
                f.first_dead = self.now
            f.dead_at.setdefault(observer, self.now)
        elif state == ALIVE:
            f.dead_at.pop(observer, None)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def run(n: int, fail: int, loss: float, periods: int, seed: int,
        config: Config | None = None) -> dict[str, Any]:
    """One simulation run; returns the figures ``--json`` prints."""
    started = time.perf_counter()
    sim = Simulation(n, seed=seed, loss=loss, config=config)
    p = sim.config.probe_interval
    warmup = 5 * p
    sim.run_until(warmup)
    sim.reset_counters()
    # Spread the failures over the first part of the run, leaving time to see them out.
    last = max(warmup, (periods - 40) * p, periods * p / 2)
    victims = sim.rng.sample(range(n), min(fail, n - 1))
    times = sorted(warmup + (last - warmup) * sim.rng.random() for _ in victims)
    for v, t in zip(victims, times, strict=True):
        sim.run_until(t)
        sim.fail(v)
    end = warmup + periods * p
    done: dict[int, float] = {}  # victim -> seconds from its failure until all saw it dead
    while sim.now < end:
        sim.run_until(min(end, sim.now + p / 4))
        for v, f in sim.failures.items():
            if v not in done and sim.dead_everywhere(v):
                done[v] = max(f.dead_at.values(), default=sim.now) - f.at
    fs = list(sim.failures.values())
    member_periods = sim.member_periods()
    return {
        "members": n,
        "failed": len(fs),
        "loss": loss,
        "periods": periods,
        "seed": seed,
        "medians_over": "failed members",
        "periods_to_first_detection": _median(
            [(f.first_suspected - f.at) / p for f in fs if f.first_suspected is not None]),
        "periods_to_first_dead": _median(
            [(f.first_dead - f.at) / p for f in fs if f.first_dead is not None]),
        "periods_to_full_dissemination": _median([t / p for t in done.values()]),
        "periods_dead_first_to_all": _median(
            [(f.at + done[f.member] - f.first_dead) / p for f in fs
             if f.member in done and f.first_dead is not None]),
        "failures_not_disseminated": len(fs) - len(done),
        "false_positives": len(sim.false_positives),
        "false_suspicions": sim.false_suspicions,
        "messages_per_member_per_period": round(sim.messages / member_periods, 3),
        "bytes_per_member_per_period": round(sim.bytes / member_periods, 1),
        "pushpulls_per_member_per_period": round(sim.pushpulls / member_periods, 4),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m gossip.sim", description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, required=True)
    ap.add_argument("--fail", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--periods", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.members < 2 or not 0 <= args.loss < 1 or args.periods < 1 or args.fail < 0:
        ap.error("need --members >= 2, 0 <= --loss < 1, --periods >= 1, --fail >= 0")
    result = run(args.members, args.fail, args.loss, args.periods, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
