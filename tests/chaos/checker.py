"""The checker: what a chaos history and the healed cluster's final state must satisfy.

Terms, per key. A *mutation* is a put or an rm. It is *acknowledged* when the client got 201 /
204, *indeterminate* when it got a 503 or a 507 (a full disk), a timeout, a lost connection or
an unexpected status (such a write may or may not surface later, even much later: design.md,
"A 503 means not acknowledged"), and has no effect when the connection was refused or an rm
got 404. Its *effect* is the value's digest for a put, ABSENT for an rm. Mutation Y *follows* X
in real time when Y started after X ended. An indeterminate mutation whose client gave up
(timeout, lost connection) may still be running on its coordinator, so it may read the key's
state at any time; any other mutation read it before it ended (`Op.read_by`).

Rules:

1. Reads return only written bytes: every value a get returned (body or sibling) is the digest
   of some put to the same key, acknowledged or not, and no read fails as ``corrupt``
   (the client re-hashes every body against its ETag). Two acknowledged puts of one key never
   get the same version (one version, two values: replicas would keep different ones).
   No request fails in an unexpected way (a 500, a 4xx other than a 404 for a get or an rm
   of a missing file).
2. Let LAST be the acknowledged mutations of the key that no acknowledged mutation of the key
   follows (they overlap each other pairwise). The final observation F (the value, the set of
   siblings on a 300, or ABSENT) may contain only effects of LAST, effects of indeterminate
   mutations, or ABSENT when nothing was acknowledged. Anything else is a *phantom* (nobody
   wrote it), a *resurrection* (an acknowledged put followed by an acknowledged put or rm), or
   a *lost* acknowledged put (F is ABSENT though no candidate is a delete).
3. Nothing acknowledged is lost: for each X in LAST, F contains X's effect, or the effect of
   another mutation Z that may have seen X (Z.read_by > X.start, so Z's clock may descend X's),
   or, when X is an rm, a value of an indeterminate put (whose old clock is concurrent with the
   tombstone, and a live sibling hides a tombstone).
4. After healing, the cluster converges: every peer reading every key with r=N returns the same
   observation, then every peer reading with r=1 does too (its replicas were repaired), and
   every peer's listing of each directory names exactly the keys that hold a file, all within
   the stated time (30 s by default). (The runner checks this; `check` applies rules 1-3.)
5. Once healed and converged, the cluster stays so: every read that starts at or after
   `settled_at` (the runner reads every key through every peer for the scenario's `settle`
   seconds) returns what rule 2 allows the final state to be and misses nothing rule 3 keeps.
   Otherwise it is a *stale read* (an older version than an acknowledged one), a *deleted file
   that came back* (the key's last acknowledged mutations are deletes), or an *acknowledged
   write unreadable* (a 404 where an acknowledged put must be).
6. Space is reclaimed (`check_space`, the soak): with the cluster quiet, the block bytes a peer
   stores are at most what the live files need (one copy of each final value's blocks) plus a
   slack, and all peers together at most N times that.
7. No peer crashes or logs an unhandled error (`check_logs`): Twisted's "Unhandled error in
   Deferred" / "Unhandled Error", a bare traceback on stderr, or an ERROR / CRITICAL record. A
   WARNING with a traceback (a background round that failed and will run again) is handled.

Every violation about a key carries `history`: that key's operations up to the one that shows
it (the last few, and any still running then), oldest first.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from tests.chaos.history import ABSENT, FAILED, INDETERMINATE, OK, READ, Op

MUTATIONS = ("put", "rm")
AROUND = 12  # operations of the key shown up to the one at fault
SLACK = 4 << 20  # bytes of blocks a peer may keep beyond the live files' need


def check(
    ops: Iterable[Op], final: Mapping[str, frozenset[str]], settled_at: float | None = None
) -> list[dict[str, object]]:
    """Violations of rules 1-3 (and of 5 when `settled_at` is given) by a history and the
    final observation of every key."""
    violations: list[dict[str, object]] = []
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    for key in sorted(set(by_key) | set(final)):
        history = by_key.get(key, [])
        found = _check_reads(key, history)
        if key in final:
            found += check_final(key, history, final[key])
        if settled_at is not None:
            found += check_settled_reads(key, history, settled_at)
        for violation in found:
            op = violation.get("op")
            start = op["start"] if isinstance(op, dict) else math.inf
            violation.setdefault("history", around(history, start))
        violations += found
    return violations


def around(history: list[Op], at: float, count: int = AROUND) -> list[dict[str, object]]:
    """The key's operations that started by `at`: the last `count`, and any still running
    then, oldest first."""
    before = sorted((op for op in history if op.start <= at), key=lambda op: op.start)
    running = [op for op in before[:-count] if op.end >= at]
    return [op.summary() for op in sorted(running + before[-count:], key=lambda op: op.start)]


def check_settled_reads(key: str, history: list[Op], settled_at: float) -> list[dict[str, object]]:
    """Rule 5: reads from `settled_at` on return only what the final state may be, and all
    that it must keep. One violation per kind per key: the first read that shows it, and how
    many did."""
    last, maybe = candidates(history)
    allowed = {op.effect for op in last + maybe}
    if not last:
        allowed.add(ABSENT)
    acked_puts = {op.value for op in history if op.kind == "put" and op.outcome == OK}
    deleted = bool(last) and all(op.kind == "rm" for op in last)
    found: dict[str, dict[str, object]] = {}
    counts: dict[str, int] = defaultdict(int)
    for op in history:
        if op.kind != "get" or op.outcome != READ or op.start < settled_at:
            continue
        unexpected = op.seen - allowed
        missed = [x for x in last if not _covered(x, last + maybe, op.seen)]
        if not unexpected and not missed:
            continue
        if ABSENT in unexpected:
            what = "acknowledged write unreadable after settling"
        elif deleted:
            what = "deleted file came back"
        elif unexpected <= acked_puts:
            what = "stale read after settling"
        else:
            what = "unexpected value after settling"
        counts[what] += 1
        found.setdefault(
            what,
            {
                "violation": what,
                "key": key,
                "op": op.summary(),
                "last": [x.summary() for x in last],
            },
        )
    for what, violation in found.items():
        violation["reads"] = counts[what]
    return list(found.values())


def check_space(
    stored: Mapping[str, int], live: int, copies: int, slack: int = SLACK
) -> list[dict[str, object]]:
    """Rule 6: the block bytes each peer `stored` against the `live` bytes the final files
    need, with `copies` (N) copies in all."""
    total = sum(stored.values())
    over = sorted(peer for peer, size in stored.items() if size > live + slack)
    if not over and total <= copies * (live + slack):
        return []
    return [
        {
            "violation": "space not reclaimed",
            "stored_bytes": dict(stored),
            "total_bytes": total,
            "live_bytes": live,
            "allowed_per_peer": live + slack,
            "allowed_total": copies * (live + slack),
            "peers_over": over,
        }
    ]


_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \S+ (?P<level>[A-Z]+) ")
_BARE_START = (
    "Unhandled error in Deferred",
    "Unhandled Error",
    "while handling timed call",
    "Exception in thread",
    "Traceback (most recent",
)
_UNHANDLED = re.compile("|".join(re.escape(start) for start in _BARE_START))


def check_logs(logs: Mapping[str, str]) -> list[dict[str, object]]:
    """Rule 7: each peer whose log shows an unhandled error, with the first such entry."""
    violations: list[dict[str, object]] = []
    for peer, text in sorted(logs.items()):
        bad = [entry for entry in log_entries(text) if _unhandled(entry)]
        if bad:
            violations.append(
                {
                    "violation": "peer logged an unhandled error",
                    "peer": peer,
                    "count": len(bad),
                    "first": bad[0][:3000],
                }
            )
    return violations


def log_entries(text: str) -> list[str]:
    """A peer's log as entries: a logging record with its continuation lines, or a run of
    lines written straight to stderr (by Twisted, by a dying thread or process). A traceback
    right after a record's first line is that record's own (`log.exception`)."""
    entries: list[str] = []
    bare = True
    for line in text.splitlines():
        if _RECORD.match(line):
            entries.append(line)
            bare = False
        elif not entries or (
            line.startswith(_BARE_START) and not bare and _not_own(line, entries[-1])
        ):
            entries.append(line)
            bare = True
        else:
            entries[-1] += "\n" + line
    return entries


def _not_own(line: str, record: str) -> bool:
    """Whether a bare-looking `line` after `record` is not that record's own traceback."""
    return not line.startswith("Traceback") or "\n" in record


def _unhandled(entry: str) -> bool:
    record = _RECORD.match(entry)
    if record is None:
        return _UNHANDLED.search(entry) is not None
    return record.group("level") in ("ERROR", "CRITICAL") or "Unhandled" in entry


def _check_reads(key: str, history: list[Op]) -> list[dict[str, object]]:
    """Rule 1: every value read during the run was written to this key by some put, and no
    two acknowledged puts were given the same version."""
    written = {op.value for op in history if op.kind == "put" and op.value is not None}
    versions: dict[str, Op] = {}
    shared = []
    for op in history:
        if op.kind == "put" and op.outcome == OK and op.version is not None:
            first = versions.setdefault(op.version, op)
            if first is not op:
                shared.append(
                    {
                        "violation": "two acknowledged writes share one version",
                        "key": key,
                        "ops": [first.summary(), op.summary()],
                    }
                )
    return shared + [
        {"violation": "phantom read", "key": key, "value": value, "op": op.summary()}
        for op in history
        if op.kind == "get" and op.outcome == READ
        for value in sorted(op.seen - written - {ABSENT})
    ]


def candidates(history: list[Op]) -> tuple[list[Op], list[Op]]:
    """(LAST, indeterminate mutations) of one key's history."""
    acked = [op for op in history if op.kind in MUTATIONS and op.outcome == OK]
    # Not followed by an acknowledged mutation that started after it ended: one pass, as the
    # hour-long soak's keys have tens of thousands of them each.
    latest_start = max((op.start for op in acked), default=0.0)
    last = [x for x in acked if x.end >= latest_start]
    maybe = [op for op in history if op.kind in MUTATIONS and op.outcome in (INDETERMINATE, FAILED)]
    return last, maybe


def check_final(key: str, history: list[Op], seen: frozenset[str]) -> list[dict[str, object]]:
    """Rules 2 and 3 for one key whose final observation is `seen`."""
    last, maybe = candidates(history)
    allowed = {op.effect for op in last + maybe}
    if not last:
        allowed.add(ABSENT)
    acked_puts = {op.value: op for op in history if op.kind == "put" and op.outcome == OK}
    written = {op.value for op in history if op.kind == "put"}
    violations: list[dict[str, object]] = []
    for value in sorted(seen - allowed):
        if value == ABSENT:
            what, op = "lost write (final state is absent)", None
        elif value in acked_puts:
            what, op = "resurrected overwritten write", acked_puts[value]
        elif value in written:
            what, op = "resurrected write", None
        else:
            what, op = "phantom value", None
        violations.append(
            {
                "violation": what,
                "key": key,
                "value": value,
                "op": op.summary() if op else None,
                "last": [x.summary() for x in last],
            }
        )
    for x in last:
        if not _covered(x, last + maybe, seen):
            violations.append(
                {
                    "violation": "lost acknowledged " + ("write" if x.kind == "put" else "delete"),
                    "key": key,
                    "op": x.summary(),
                    "final": sorted(seen),
                    "last": [y.summary() for y in last],
                }
            )
    return violations


def _covered(x: Op, others: list[Op], seen: frozenset[str]) -> bool:
    """Rule 3: `seen` keeps X's effect or that of a mutation that may have superseded X."""
    if x.effect in seen:
        return True
    for z in others:
        if z is x or z.effect not in seen:
            continue
        if z.read_by > x.start:
            return True
        if x.kind == "rm" and z.kind == "put" and z.outcome != OK:
            return True
    return False
