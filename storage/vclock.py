"""Vector clocks: the version of a record, compared by causality.

A clock maps node ids to counters (>= 1; absent means 0). ``a.compare(b)`` is BEFORE when a <= b
pointwise and a != b, AFTER for the reverse, EQUAL when identical, CONCURRENT otherwise.

Model: every node's counter grows along that node's own history, so a coordinator should merge
the clock of the latest version it wrote itself into the context before ``increment``. Two
different versions issued with the same node and counter compare EQUAL, and a record store
keeps only the first one it sees.

Bound: a clock holds at most MAX_ENTRIES entries. Entries are ranked by (counter descending,
node id ascending); past the bound the lowest-ranked entries are dropped:

- ``merge`` keeps the MAX_ENTRIES highest-ranked entries of the pointwise maximum. This stays
  commutative, associative and idempotent.
- ``increment(n)`` on a full clock that lacks ``n`` sets n's counter to max(counters) + 1 and
  drops the lowest-ranked entry other than ``n``. Below the bound, or when ``n`` is present,
  it is the classic ``counter + 1``.

Claim: dropping entries only loses knowledge, so a comparison can turn BEFORE or AFTER into
CONCURRENT (a false sibling, resolved by the next write that reads both), but never invents an
order or an equality: an older version never dominates a newer one. Why: a clock that lost an
entry is full forever after, and the lowest rank it keeps never decreases, so any counter of
``n`` ever dropped in a clock's history is at most its largest remaining counter. ``increment(n)``
therefore gives ``n`` a counter above every counter of ``n`` the clock has seen, and no version
the writer merged can carry it. ``tests/unit/test_vclock.py`` checks this on random histories.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import cbor2

MAX_ENTRIES = 64
MAX_NODE_LEN = 256  # bytes of a node id, so a decoded clock stays small
MAX_COUNTER = 2**64 - 1  # the largest CBOR unsigned integer without a bignum tag


class Ordering(enum.Enum):
    """How one clock relates to another (``self`` versus ``other``)."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    """Sort key putting the highest-ranked entry first: larger counter, then smaller node id."""
    node, counter = item
    return (-counter, node)


def _keep_top(entries: dict[str, int], keep: str | None = None) -> dict[str, int]:
    """Drop the lowest-ranked entries until at most MAX_ENTRIES remain, never dropping ``keep``."""
    if len(entries) <= MAX_ENTRIES:
        return entries
    ranked = sorted(entries.items(), key=_rank)
    if keep is None:
        return dict(ranked[:MAX_ENTRIES])
    others = [item for item in ranked if item[0] != keep][: MAX_ENTRIES - 1]
    return {**dict(others), keep: entries[keep]}


class VectorClock:
    """An immutable, hashable vector clock (see the module docstring for the bound)."""

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        """Validate ``entries`` (str node ids, int counters >= 0; zeros are dropped).

        Raises ValueError on a bad node id, a bad counter or more than MAX_ENTRIES entries.
        """
        if entries is not None and not isinstance(entries, Mapping):
            raise ValueError(f"vector clock entries must be a mapping, got {type(entries)}")
        clean: dict[str, int] = {}
        for node, counter in (entries or {}).items():
            if type(node) is not str or not node.isascii() or not 0 < len(node) <= MAX_NODE_LEN:
                _check_node(node)  # the exact check, where the quick one is not enough
            if type(counter) is not int:
                raise ValueError(
                    f"vector clock counter for {node[:40]!r} is a {type(counter).__name__}, "
                    "not an int"
                )
            if not 0 <= counter <= MAX_COUNTER:
                raise ValueError(f"vector clock counter for {node[:40]!r} is not in 0..2**64-1")
            if counter:
                clean[node] = counter
        if len(clean) > MAX_ENTRIES:
            raise ValueError(f"vector clock has {len(clean)} entries, more than {MAX_ENTRIES}")
        self._entries = clean
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, entries: dict[str, int]) -> VectorClock:
        """Build from entries already known to be valid (skips re-validation on hot paths)."""
        clock = cls.__new__(cls)
        clock._entries = entries
        clock._hash = None
        return clock

    @property
    def entries(self) -> Mapping[str, int]:
        """A read-only view of node id -> counter (only non-zero counters)."""
        return MappingProxyType(self._entries)

    def increment(self, node: str) -> VectorClock:
        """Return a clock strictly after this one, recording a new event at ``node``."""
        _check_node(node)
        entries = dict(self._entries)
        if node in entries or len(entries) < MAX_ENTRIES:
            counter = entries.get(node, 0) + 1
        else:
            # Full clock without `node`: its old counter may have been dropped, and every
            # dropped counter is <= the largest kept one (module docstring).
            counter = max(entries.values()) + 1
        if counter > MAX_COUNTER:
            raise ValueError(f"vector clock counter for {node!r} would overflow")
        entries[node] = counter
        return VectorClock._trusted(_keep_top(entries, keep=node))

    def merge(self, other: VectorClock) -> VectorClock:
        """Pointwise maximum (bounded to the MAX_ENTRIES highest-ranked entries)."""
        entries = dict(self._entries)
        for node, counter in other._entries.items():
            if counter > entries.get(node, 0):
                entries[node] = counter
        return VectorClock._trusted(_keep_top(entries))

    def compare(self, other: VectorClock) -> Ordering:
        """Causal order of ``self`` relative to ``other`` (BEFORE means self < other)."""
        less = not self.descends(other)
        greater = not other.descends(self)
        if less and greater:
            return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def descends(self, other: VectorClock) -> bool:
        """True when this clock has seen everything ``other`` has (AFTER or EQUAL)."""
        mine = self._entries
        for node, counter in other._entries.items():  # noqa: SIM110 (a loop beats all() here)
            if counter > mine.get(node, 0):
                return False
        return True

    def to_cbor(self) -> dict[str, int]:
        """A plain map for embedding in CBOR messages."""
        return dict(self._entries)

    @classmethod
    def from_cbor(cls, obj: object) -> VectorClock:
        """Rebuild from ``to_cbor()`` output (which never holds zeros); ValueError on anything
        else, checked before any entry is looked at when there are too many."""
        if not isinstance(obj, dict):
            raise ValueError(f"vector clock must be a map, got {type(obj).__name__}")
        if len(obj) > MAX_ENTRIES:
            raise ValueError(f"vector clock has {len(obj)} entries, more than {MAX_ENTRIES}")
        return cls(obj)

    def encode(self) -> bytes:
        """Canonical CBOR bytes (equal clocks encode identically). Bytes from outside are
        decoded by the peer's bounded decoder (``gossip.cbor``), then ``from_cbor``."""
        return cbor2.dumps(self._entries, canonical=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VectorClock({dict(sorted(self._entries.items()))!r})"


def merge_all(clocks: Iterable[VectorClock]) -> VectorClock:
    """Merge any number of clocks (the empty clock for none): a read's version context."""
    result = VectorClock()
    for clock in clocks:
        result = result.merge(clock)
    return result


def _check_node(node: object) -> None:
    """Messages show at most a short escaped prefix of the node id: it may come from outside."""
    if not isinstance(node, str):
        raise ValueError(f"vector clock node id must be a str, got a {type(node).__name__}")
    if not node:
        raise ValueError("vector clock node id must not be empty")
    try:
        size = len(node.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"vector clock node id is not valid text: {node[:40]!r}") from exc
    if size > MAX_NODE_LEN:
        raise ValueError(f"vector clock node id longer than {MAX_NODE_LEN} bytes")
