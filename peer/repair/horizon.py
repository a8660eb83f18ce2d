"""The horizon: how long a peer may be away and still come back with its data, and how a peer
whose data predates a purge it took no part in is recognised. Pure: no I/O, no clock of its own.

Purging (tombstones, unreferenced blocks) is safe only if every peer that could bring the purged
data back took part. So every peer keeps the set of peers it has seen (`KnownPeers`), including
those that left or died; a collection round runs only when every known peer answers. A peer away
longer than the horizon is forgotten (a peer with the same name and a new node id, i.e. a
replaced disk, supersedes the old id at once), and rounds go on without it.

Rounds are numbered. A peer records, durably, the highest round its data was accounted for in
(`accounted`: it answered that round's first phase) and the highest round it knows was swept
(`swept`). Data whose `accounted` is below some peer's `swept` predates a purge it was not part
of (a forgotten peer returning, a data directory restored from an old copy): it may hold deleted
files or dropped versions, so it is never merged back; the peer is rebuilt empty and refilled
from the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_STATE_BYTES = 1 << 20
MAX_KNOWN = 10_000


@dataclass(frozen=True)
class Seen:
    """One member as gossip shows it now."""

    node_id: str
    name: str
    up: bool


@dataclass(frozen=True)
class Forgotten:
    """A known peer dropped from the set, and why."""

    node_id: str
    name: str
    reason: str


@dataclass
class Known:
    """A peer this one knows: its name, and the seconds it has been away so far (counted only
    while this peer ran: a conservative, monotonic measure)."""

    name: str
    away: float = 0.0


@dataclass
class HorizonState:
    """What one peer persists: its round numbers and the peers it knows, by node id."""

    accounted: int = 0
    swept: int = 0
    known: dict[str, Known] = field(default_factory=dict)
    filling: bool = False  # rebuilt or joined empty, and not yet holding its whole share
    forgotten: set[str] = field(default_factory=set)  # not learned again unless seen up
    down: set[str] = field(default_factory=set)  # known, not up at the last observe (not saved)

    def adopt(self, swept: int) -> None:
        """Take the cluster's last swept round as this peer's own, its data being empty (new,
        or wiped to be rebuilt): nothing here predates that sweep. Neither number goes down: a
        round this peer already began in must still find it accounted for when it sweeps, or
        its sweep is refused here while the others sweep it, and this peer looks stale to them
        (the wiped peer would be rebuilt again, and again)."""
        self.accounted = max(self.accounted, swept)
        self.swept = max(self.swept, swept)

    def stale_against(self, swept: int) -> bool:
        """Whether this peer's data predates round `swept`, which was purged without it."""
        return self.accounted < swept

    def observe(self, members: Iterable[Seen], elapsed: float, horizon: float) -> list[Forgotten]:
        """Account `elapsed` seconds of absence to every known peer not up, learn every peer
        gossip shows (up or not: a peer that is down now may come back with data), and forget
        those away longer than `horizon` or superseded by a new node id under the same name.
        Returns who was forgotten."""
        members = list(members)
        up = {m.node_id: m for m in members if m.up}
        up_names = {m.name: m.node_id for m in up.values()}
        for member in members:
            if member.up:
                self.known[member.node_id] = Known(member.name)
                self.forgotten.discard(member.node_id)
            elif member.node_id not in self.known and member.node_id not in self.forgotten:
                self.known[member.node_id] = Known(member.name)
        forgotten = []
        self.down = set()
        for node_id, peer in sorted(self.known.items()):
            if node_id in up:
                continue
            if up_names.get(peer.name, node_id) != node_id:
                reason = f"superseded by {up_names[peer.name]} under the same name"
            elif peer.away + elapsed > horizon:
                reason = f"away for more than the horizon ({horizon:g} s)"
            else:
                peer.away += elapsed
                self.down.add(node_id)
                continue
            del self.known[node_id]
            self.forgotten.add(node_id)
            forgotten.append(Forgotten(node_id, peer.name, reason))
        while len(self.forgotten) > MAX_KNOWN:
            self.forgotten.pop()
        return forgotten

    def away(self) -> dict[str, float]:
        """Known peers not seen up at the last `observe`, by node id: seconds away so far."""
        return {node_id: self.known[node_id].away for node_id in self.down}

    def name_of(self, node_id: str) -> str:
        """A known peer's name (its id when unknown)."""
        entry = self.known.get(node_id)
        return entry.name if entry else node_id

    def encode(self) -> bytes:
        """The persisted form (JSON)."""
        body = {
            "accounted": self.accounted,
            "swept": self.swept,
            "known": {node_id: [peer.name, peer.away] for node_id, peer in self.known.items()},
            "filling": self.filling,
            "forgotten": sorted(self.forgotten),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> HorizonState:
        """Parse and check the persisted form; ValueError naming what is wrong."""
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"horizon state is {len(data)} bytes, more than {MAX_STATE_BYTES}")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"horizon state is not JSON: {str(e)[:80]}") from None
        if not isinstance(body, dict):
            raise ValueError("horizon state must be an object")
        rounds = [body.get("accounted"), body.get("swept")]
        if not all(type(r) is int and 0 <= r < 2**63 for r in rounds):
            raise ValueError("horizon state: accounted and swept must be round numbers")
        known = body.get("known")
        if not isinstance(known, dict) or len(known) > MAX_KNOWN:
            raise ValueError(f"horizon state: known must map at most {MAX_KNOWN} node ids")
        for node_id, entry in known.items():
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or type(entry[1]) not in (int, float)
                or not 0 <= entry[1] < float("inf")
                or len(node_id) > 128
            ):
                raise ValueError("horizon state: each known peer must be [name, seconds away]")
        filling = body.get("filling", False)
        if not isinstance(filling, bool):
            raise ValueError("horizon state: filling must be true or false")
        gone = body.get("forgotten", [])
        if not isinstance(gone, list) or len(gone) > MAX_KNOWN:
            raise ValueError(f"horizon state: forgotten must list at most {MAX_KNOWN} node ids")
        if not all(isinstance(n, str) and len(n) <= 128 for n in gone):
            raise ValueError("horizon state: forgotten must list node ids")
        peers = {k: Known(v[0], float(v[1])) for k, v in known.items()}
        return cls(rounds[0], rounds[1], peers, filling, set(gone))
