"""The checker: what a chaos history and the healed cluster's final state must satisfy.

Terms, per key. A *mutation* is a put or an rm. It is *acknowledged* when the client got 201 /
204, *indeterminate* when it got a 503, a timeout, a lost connection or an unexpected status
(such a write may or may not surface later, even much later: design.md, "A 503 means not
acknowledged"), and has no effect when the connection was refused or an rm got 404. Its
*effect* is the value's digest for a put, ABSENT for an rm. Mutation Y *follows* X in real time
when Y started after X ended. An indeterminate mutation whose client gave up (timeout, lost
connection) may still be running on its coordinator, so it may read the key's state at any
time; any other mutation read it before it ended (`Op.read_by`).

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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from tests.chaos.history import ABSENT, FAILED, INDETERMINATE, OK, READ, Op

MUTATIONS = ("put", "rm")


def check(ops: Iterable[Op], final: Mapping[str, frozenset[str]]) -> list[dict[str, object]]:
    """Violations of rules 1-3 by a history and the final observation of every key."""
    violations: list[dict[str, object]] = []
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    for key in sorted(set(by_key) | set(final)):
        history = by_key.get(key, [])
        violations += _check_reads(key, history)
        if key in final:
            violations += check_final(key, history, final[key])
    return violations


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
    last = [x for x in acked if not any(y.start > x.end for y in acked)]
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
