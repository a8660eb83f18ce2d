"""Quorum decisions, free of I/O: where a write goes, when a call has enough replies, and how
replies from several replicas reconcile into the current version.

Invariants:
- A key's home replicas are the first N distinct peers of its preference list. A home that is
  down is replaced by the next up peer beyond them, which stores the data with a hint naming the
  home (sloppy quorum); it hands the data over when the home returns.
- A call succeeds once `required` targets replied and fails as soon as that can no longer
  happen; nothing is reported as success before that.
- Reconciling keeps every sibling no other sibling's clock descends; a replica that lacks one of
  them is stale and gets it back (read-repair).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.records import Sibling
from storage.vclock import VectorClock


@dataclass(frozen=True)
class Target:
    """A peer a write or read goes to; `hint_for` names the home it stands in for, if any."""

    node: str
    hint_for: str | None = None


def plan_targets(preference: list[str], is_up: Callable[[str], bool], n: int) -> list[Target]:
    """The up homes among the first `n` of `preference`, plus one stand-in per down home."""
    homes = preference[:n]
    targets = [Target(node) for node in homes if is_up(node)]
    stand_ins = (node for node in preference[n:] if is_up(node))
    for home in homes:
        if not is_up(home):
            stand_in = next(stand_ins, None)
            if stand_in is None:
                break
            targets.append(Target(stand_in, hint_for=home))
    return targets


class QuorumError(Exception):
    """Fewer than the required replicas answered; the operation did not take effect."""

    def __init__(self, what: str, required: int, got: int, failures: Mapping[str, str]):
        self.required = required
        self.got = got
        self.failures = dict(failures)
        reasons = "; ".join(f"{node}: {reason}" for node, reason in sorted(self.failures.items()))
        super().__init__(
            f"{what}: quorum not met, {got} of {required} required replicas answered"
            + (f" ({reasons})" if reasons else "")
        )


@dataclass
class QuorumTally:
    """Counts the replies of one call that needs `required` successes within each group of
    targets (one group for a plain call; one per key placement when writes to several keys
    share the calls to each peer)."""

    groups: list[frozenset[str]]
    required: int
    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def over(cls, targets: Iterable[str], required: int) -> QuorumTally:
        """A tally for one group: `required` of `targets`."""
        return cls([frozenset(targets)], required)

    def succeeded(self, node: str, result: Any) -> None:
        """Record a success from `node`."""
        self.results[node] = result

    def failed(self, node: str, reason: str) -> None:
        """Record a failure (error reply, timeout, lost connection) from `node`."""
        self.failures[node] = reason

    @property
    def met(self) -> bool:
        """Enough successes in every group: the call may report success."""
        return all(len(group & self.results.keys()) >= self.required for group in self.groups)

    @property
    def impossible(self) -> bool:
        """Too many failures in some group: success can no longer happen."""
        return any(len(group - self.failures.keys()) < self.required for group in self.groups)

    @property
    def complete(self) -> bool:
        """Every target has answered one way or the other."""
        return all(group <= self.results.keys() | self.failures.keys() for group in self.groups)


def reconcile(replies: Iterable[list[Sibling]]) -> list[Sibling]:
    """The siblings from all replies that no other sibling's clock descends (duplicates merged)."""
    merged: list[Sibling] = []
    for siblings in replies:
        for candidate in siblings:
            if any(kept.clock.descends(candidate.clock) for kept in merged):
                continue
            merged = [kept for kept in merged if not candidate.clock.descends(kept.clock)]
            merged.append(candidate)
    return merged


def missing_siblings(have: list[Sibling], current: list[Sibling]) -> list[Sibling]:
    """The siblings of `current` that a replica holding `have` lacks (what read-repair sends)."""
    return [s for s in current if not any(h.clock.descends(s.clock) for h in have)]


def live(siblings: list[Sibling]) -> list[Sibling]:
    """The siblings that are values, not tombstones."""
    return [s for s in siblings if not s.tombstone]


def context_of(siblings: Iterable[Sibling]) -> VectorClock:
    """The clock that descends every sibling: a write carrying it replaces them all."""
    clock = VectorClock()
    for sibling in siblings:
        clock = clock.merge(sibling.clock)
    return clock


def next_clock(
    base: VectorClock, current: Iterable[Sibling], node: str, floor: int = 1
) -> VectorClock:
    """The clock of a new version written by `node` that descends `base`.

    `node`'s counter goes above every counter of `node` among the `current` siblings and to at
    least `floor`, so no two versions `node` writes ever share a clock: not a client context
    older than this node's latest write, not two writes of one key racing through this node,
    not a write after the key's tombstone was purged (two different versions with one clock
    would make each replica keep whichever it saw first).
    """
    seen = max((s.clock.entries.get(node, 0) for s in current), default=0)
    counter = max(seen + 1, base.entries.get(node, 0) + 1, floor)
    return base.merge(VectorClock({node: counter - 1})).increment(node)


RESERVE_CHUNK = 10_000_000  # counters reserved per persisted mark: 10 s of the wall clock


class CounterSource:
    """This node's version counters: strictly increasing and at least the wall clock in
    microseconds, and never repeating across restarts or wall-clock steps.

    Every counter issued is at most a high-water mark kept on disk (`reserve` stores it
    durably). A counter beyond the mark first moves the mark a chunk ahead, before the clock
    carrying it is returned to be written; a restart starts above the stored mark. So a clock
    stepped back (or a restart on one) never makes this node issue a counter twice, and the
    mark is written about once per chunk, not once per write.
    """

    def __init__(
        self,
        wall_clock: Callable[[], float],
        mark: int = 0,
        reserve: Callable[[int], None] = lambda mark: None,
        chunk: int = RESERVE_CHUNK,
    ) -> None:
        """`mark` is the stored high-water mark (every counter issued before is <= it)."""
        self._wall_clock = wall_clock
        self._reserve = reserve
        self._chunk = chunk
        self._mark = mark
        self._last = mark

    def floor(self) -> int:
        """The least counter the next version may use."""
        return max(self._last + 1, int(self._wall_clock() * 1_000_000))

    def issued(self, clock: VectorClock, node: str) -> VectorClock:
        """Record that `clock` is given to a new version; returns it once its counter is
        covered by the stored mark (an error from `reserve` means it may not be used)."""
        counter = clock.entries.get(node, 0)
        if counter > self._mark:
            mark = counter + self._chunk
            self._reserve(mark)
            self._mark = mark
        self._last = max(self._last, counter)
        return clock
