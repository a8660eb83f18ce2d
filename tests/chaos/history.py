"""The history of a chaos run: every client operation with its start, end and outcome.

Times are `time.monotonic()` seconds, comparable across the workload's threads. Values are
recorded by their BLAKE3 hex digest; `ABSENT` stands for "no file" (a 404, or a tombstone).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import blake3

from peer.client.api_client import QfsError

ABSENT = "<absent>"

# Outcomes of a put or rm.
OK = "ok"  # acknowledged (201 / 204)
NOOP = "noop"  # rm answered 404: it found nothing to delete and wrote nothing
INDETERMINATE = "indeterminate"  # 503, 507, timeout, lost connection: may or may not take effect
NOT_SENT = "not-sent"  # the connection was refused: the request never reached a peer
FAILED = "error"  # an unexpected failure (a 500...): a violation, and indeterminate for values
# Outcomes of a get.
READ = "read"  # `seen` holds what the read returned (one hash, sibling hashes, or ABSENT)
UNAVAILABLE = "unavailable"  # 503 / timeout / unreachable: the read learned nothing


def digest(data: bytes) -> str:
    """The BLAKE3 hex digest a value is recorded by."""
    return blake3.blake3(data).hexdigest()


@dataclass
class Op:
    """One client operation. For a put `value` is the digest written; for a get `seen` is what
    the read returned. `late` marks an unacknowledged mutation whose coordinator may still be
    running after the client gave up (timeout, lost connection): it may take effect any time."""

    id: int
    client: str
    peer: str
    kind: str  # "put" | "get" | "rm"
    key: str
    start: float
    end: float = math.inf
    value: str | None = None
    size: int = 0
    outcome: str = ""
    seen: frozenset[str] = frozenset()
    status: int | None = None
    error: str = ""
    late: bool = False
    version: str | None = None  # the version an acknowledged put was given

    @property
    def effect(self) -> str:
        """What this mutation leaves at its key if it wins: the value digest, or ABSENT."""
        return self.value if self.kind == "put" and self.value is not None else ABSENT

    @property
    def read_by(self) -> float:
        """The latest time this mutation's coordinator may have read the key's current state."""
        return math.inf if self.late else self.end

    def summary(self) -> dict[str, object]:
        """A JSON-able description for violation reports."""
        return {
            "id": self.id,
            "client": self.client,
            "peer": self.peer,
            "kind": self.kind,
            "key": self.key,
            "start": round(self.start, 3),
            "end": round(self.end, 3) if math.isfinite(self.end) else None,
            "outcome": self.outcome,
            "value": self.value,
            "seen": sorted(self.seen),
            "status": self.status,
            "error": self.error,
            "version": self.version,
        }


@dataclass
class History:
    """A thread-safe log of operations and of unexpected failures seen while running them."""

    ops: list[Op] = field(default_factory=list)
    problems: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, client: str, peer: str, kind: str, key: str, now: float) -> Op:
        """Record the start of an operation."""
        with self._lock:
            op = Op(len(self.ops), client, peer, kind, key, now)
            self.ops.append(op)
            return op

    def problem(self, what: str, **detail: object) -> None:
        """Record a violation noticed while running (an unexpected status, a corrupt read)."""
        with self._lock:
            self.problems.append({"violation": what, **detail})


UNAVAILABLE_STATUSES = (503, 507)  # not acknowledged: the quorum or a replica's disk fell short


def classify_failure(op: Op, error: QfsError) -> None:
    """Fill in `op`'s outcome for a failed request; unexpected failures are left as `error`."""
    op.status, op.error = error.status, error.error
    if error.status is None and error.error == "unreachable":
        op.outcome = NOT_SENT if op.kind != "get" else UNAVAILABLE
    elif op.kind == "get":
        op.outcome = UNAVAILABLE if error.status in (None, 503) else FAILED
    elif error.status == 404 and op.kind == "rm":
        op.outcome = NOOP
    elif error.status in UNAVAILABLE_STATUSES:
        op.outcome = INDETERMINATE
    elif error.status is None and error.error in ("timeout", "connection lost"):
        op.outcome, op.late = INDETERMINATE, True
    else:
        op.outcome, op.late = FAILED, True


def expected_failure(error: QfsError, kind: str) -> bool:
    """Whether a failure is one chaos may cause: 503, 507 for a put or rm (a full disk), a dead
    or frozen peer, or a 404 for rm/get.

    A `corrupt` read, a 500 or any other status is not.
    """
    if error.status is None:
        return error.error in ("unreachable", "timeout", "connection lost")
    if error.status == 507:
        return kind != "get"
    return error.status == 503 or (error.status == 404 and kind in ("get", "rm"))
