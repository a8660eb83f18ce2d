"""SWIM + Lifeguard membership as a pure state machine: no sockets, no reactor, no Twisted.

Inputs are received messages (``handle``, ``handle_pushpull``, ``merge_pushpull_reply``), the
time (``now`` in seconds, any monotonic origin) and a seeded ``random.Random``; outputs are
effects: ``Send`` a datagram, start a TCP ``PushPull``, and ``MemberChanged`` events. The caller
calls ``tick(now)`` no later than ``next_wakeup()`` and again after every input.

Protocol (Das et al. 2002; Lifeguard, Dadgar et al. 2017; timings as hashicorp/memberlist):
- every (awareness-scaled) probe interval, probe the next member of a shuffled round-robin
  order: direct ping; no ack within the probe timeout -> ping-req through ``indirect_checks``
  members, each answering with an ack, or a nack when the target stayed silent; no ack by the
  end of the interval -> suspect it. A ping-req is served only for a live member about a
  member it knows, each at its known address, at most MAX_RELAYS at once, so a forged one
  cannot aim datagrams anywhere outside the membership;
- a suspicion turns into death when its Lifeguard timer expires (see ``suspicion.py``);
- every gossip interval, queued updates go to ``gossip_nodes`` random members; every datagram
  carries as many queued updates as fit in ``max_datagram`` bytes (see ``broadcasts.py``);
- every push-pull interval, full state is exchanged with one random live member over TCP, and
  with one dead member too, so that partitions heal.

Incarnation invariant: each member's (incarnation, state) only moves forward. A higher
incarnation always wins; at equal incarnation suspect beats alive and dead/left beat both. Only
a member itself raises its own incarnation: to refute a suspicion or death of itself (new
incarnation = the claimed one + 1), or to leave.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cbor2

from gossip.awareness import Awareness
from gossip.broadcasts import BroadcastQueue, retransmit_limit
from gossip.suspicion import Suspicion, suspicion_min_timeout
from gossip.updates import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Addr,
    BadMessage,
    Meta,
    Update,
    alive_update,
    check_int,
    check_name,
    dead_update,
    left_update,
    parse_record,
    parse_update,
    record,
    suspect_update,
)
from gossip.wire import Codec, Message

PING = "gossip.ping"
ACK = "gossip.ack"
NACK = "gossip.nack"
PING_REQ = "gossip.pingreq"
GOSSIP = "gossip.gossip"
PUSH_PULL = "gossip.pushpull"

_LIVE = frozenset((ALIVE, SUSPECT))  # states that are probed and gossiped to
_GONE = frozenset((DEAD, LEFT))
# States a member is told we hold it in whenever we send to it, so that it can refute: a
# member we suspect, think dead, or saw leave is alive if it is talking to us.
_DOUBTED = frozenset((SUSPECT, DEAD, LEFT))
_MAX_SEQ = 2**32 - 1
MAX_RELAYS = 64  # ping-reqs served at once; a cluster in trouble asks a member for a few
# The update array's CBOR header is 1 byte when empty and at most 3 bytes with updates.
_ARRAY_HEADER_GROWTH = 2


@dataclass(frozen=True)
class Config:
    """Protocol timings and sizes; defaults are memberlist's LAN profile."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: float = 4.0
    suspicion_max_timeout_mult: float = 6.0
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_dead_time: float = 30.0
    pushpull_interval: float = 30.0
    reap_after: float = 3600.0
    awareness_max_multiplier: int = 8
    max_datagram: int = 1400

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "gossip_interval", "pushpull_interval",
                     "suspicion_mult", "suspicion_max_timeout_mult"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("probe_timeout must be shorter than probe_interval")
        if self.max_datagram < 256:
            raise ValueError("max_datagram must be at least 256 bytes")


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A snapshot of one member as this member sees it."""

    name: str
    node_id: str
    state: str  # "alive" | "suspect" | "dead" | "left"
    incarnation: int
    addr: Addr
    http: Addr
    version: int
    last_heard: float | None  # the `now` of the last message from it; None for ourselves


@dataclass(frozen=True, slots=True)
class Send:
    """Send one datagram; ``size`` is an upper bound of its encoded size."""

    addr: Addr
    type: str
    body: dict[str, Any]
    size: int


@dataclass(frozen=True, slots=True)
class PushPull:
    """Exchange full state over TCP with ``addr``: send ``pushpull_request``, merge the reply."""

    addr: Addr
    name: str


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A member appeared or changed state (``previous`` is None when it is new to us)."""

    member: MemberInfo
    previous: str | None


Effect = Send | PushPull | MemberChanged


class _Member:
    __slots__ = (
        "incarnation", "last_heard", "meta", "name", "since", "state", "suspicion", "told_at"
    )

    def __init__(self, name: str, meta: Meta, incarnation: int, state: str, now: float) -> None:
        self.name = name
        self.meta = meta
        self.incarnation = incarnation
        self.state = state
        self.since = now
        self.last_heard: float | None = None
        self.suspicion: Suspicion | None = None
        self.told_at = -math.inf  # when we last told it that we hold it dead or left

    def info(self) -> MemberInfo:
        m = self.meta
        return MemberInfo(self.name, m.node_id, self.state, self.incarnation, m.addr, m.http,
                          m.version, self.last_heard)


class _Probe:
    __slots__ = ("ack_deadline", "end", "expected_nacks", "indirect", "nacks", "seq", "target")

    def __init__(self, target: str, seq: int, ack_deadline: float, end: float) -> None:
        self.target = target
        self.seq = seq
        self.ack_deadline = ack_deadline
        self.end = end
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """A ping we sent on behalf of a ping-req: where to forward the ack, when to nack."""

    __slots__ = ("expires", "nack_at", "origin", "origin_addr", "origin_seq")

    def __init__(self, origin: str, addr: Addr, seq: int, nack_at: float, expires: float) -> None:
        self.origin = origin
        self.origin_addr = addr
        self.origin_seq = seq
        self.nack_at: float | None = nack_at
        self.expires = expires


def _encoded_size(update: list[Any]) -> int:
    return len(cbor2.dumps(update))


class Membership:
    """One member's view of the cluster and its side of the SWIM protocol."""

    def __init__(
        self,
        name: str,
        meta: Meta,
        *,
        codec: Codec,
        rng: random.Random,
        now: float,
        config: Config | None = None,
    ) -> None:
        self.name = check_name(name)
        self.config = config or Config()
        self._meta = meta
        self._incarnation = 0
        self._leaving = False
        self._version = 0  # see ``version``
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self._codec = codec
        self._rng = rng
        self._members: dict[str, _Member] = {}
        self._names: list[str] = []  # every known member but us, for O(1) random picks
        self._slot: dict[str, int] = {}  # name -> index in _names
        self._live = 0  # members alive or suspect, not counting us
        self._gone: set[str] = set()  # members dead or left, waiting to be reaped
        self._suspects: set[str] = set()
        self._probe_order: list[str] = []
        self._probe_pos = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = rng.randrange(_MAX_SEQ)
        self._queue = BroadcastQueue()
        c = self.config
        self._next_probe = now + rng.random() * c.probe_interval
        self._next_gossip = now + rng.random() * c.gossip_interval
        self._next_pushpull = now + c.pushpull_interval * (0.5 + rng.random())
        self._enqueue(name, alive_update(name, 0, meta))
        self._handlers = {PING: self._on_ping, ACK: self._on_ack, NACK: self._on_nack,
                          PING_REQ: self._on_pingreq, GOSSIP: self._on_gossip}

    # ---- queries -----------------------------------------------------------------------

    @property
    def meta(self) -> Meta:
        """Our own metadata (fixed for the life of this member)."""
        return self._meta

    @property
    def incarnation(self) -> int:
        """Our own incarnation."""
        return self._incarnation

    @property
    def version(self) -> int:
        """A number that grows whenever ``members()`` reports something new.

        Every change of a member's presence, state, incarnation or metadata (ours included)
        raises it; ``last_heard`` alone does not, as it changes with every message.
        """
        return self._version

    def members(self) -> list[MemberInfo]:
        """Every known member, ourselves first, then by name."""
        m = self._meta
        me = MemberInfo(self.name, m.node_id, LEFT if self._leaving else ALIVE,
                        self._incarnation, m.addr, m.http, m.version, None)
        return [me, *(self._members[n].info() for n in sorted(self._members))]

    def member(self, name: str) -> MemberInfo | None:
        """One member other than ourselves, or None if unknown (or reaped)."""
        m = self._members.get(name)
        return m.info() if m is not None else None

    @property
    def cluster_size(self) -> int:
        """Estimated cluster size: live members, counting ourselves."""
        return self._live + 1

    @property
    def leave_done(self) -> bool:
        """True once ``leave`` was called and the leave update was sent its full count."""
        return self._leaving and self.name not in self._queue

    def next_wakeup(self) -> float:
        """The latest time at which ``tick`` must be called next."""
        t = self._next_pushpull
        p = self._probe
        if p is not None:
            t = min(t, p.end if p.indirect else p.ack_deadline)
        elif not self._leaving:
            t = min(t, self._next_probe)
        for r in self._relays.values():
            t = min(t, r.nack_at if r.nack_at is not None else r.expires)
        for name in self._suspects:
            t = min(t, self._members[name].suspicion.deadline)  # type: ignore[union-attr]
        if self._queue:
            t = min(t, self._next_gossip)
        return t

    # ---- inputs ------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """The event announcing ourselves alive (call once, first)."""
        return [MemberChanged(self.members()[0], None)]

    def bootstrap(self, members: Iterable[tuple[str, Meta]], now: float) -> None:
        """Know ``members`` as alive at incarnation 0 without announcing anything.

        For simulations and tests that start from a converged cluster; real members join
        through push-pull.
        """
        for name, meta in members:
            if name != self.name and name not in self._members:
                self._add(_Member(name, meta, 0, ALIVE, now))
        self._queue.discard(self.name)  # everyone knows us already

    def handle(self, msg: Message, src: Addr, now: float) -> list[Effect]:
        """React to one datagram from ``src``; raises BadMessage (changing nothing) if invalid."""
        body = msg.body
        kind = msg.type
        fields = _FIELDS.get(kind)
        if fields is None:
            raise BadMessage(f"unknown gossip message type {kind[:40]!r}")
        sender = check_name(body.get("from"))
        raw = body.get("u", ())
        if type(raw) is not list:
            raise BadMessage(f"{kind}: updates must be an array")
        updates = [parse_update(u) for u in raw]
        args = fields(body)  # everything is validated before anything changes
        out: list[Effect] = []
        m = self._members.get(sender)
        if m is not None:
            m.last_heard = now
        self._apply_all(updates, now, out)
        self._handlers[kind](sender, src, now, out, *args)
        if m is not None and m.state in _GONE:
            self._tell_gone(m, now, out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Run every timer that is due at ``now``."""
        out: list[Effect] = []
        c = self.config
        p = self._probe
        if p is not None:
            if not p.indirect and now >= p.ack_deadline:
                self._probe_indirectly(p, now, out)
            if now >= p.end:
                self._probe_failed(p, now, out)
        if self._probe is None and not self._leaving and now >= self._next_probe:
            self._reap(now)
            self._start_probe(now, out)
        if self._relays:
            for seq, r in list(self._relays.items()):
                if r.nack_at is not None and now >= r.nack_at:
                    r.nack_at = None
                    self._send(out, r.origin_addr, NACK, {"seq": r.origin_seq}, r.origin)
                if now >= r.expires:
                    del self._relays[seq]
        if self._suspects:
            for name in [n for n in self._suspects
                         if now >= self._members[n].suspicion.deadline]:  # type: ignore[union-attr]
                self._apply_dead(name, self._members[name].incarnation, self.name, False, now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + c.gossip_interval
            if self._queue:
                self._gossip(now, out)
        if now >= self._next_pushpull:
            self._next_pushpull = now + self._pushpull_interval()
            if not self._leaving:
                self._schedule_pushpull(now, out)
        return out

    def leave(self, now: float) -> list[Effect]:
        """Start a graceful leave: announce it at once; stop probing. Idempotent."""
        if self._leaving:
            return []
        self._probe = None
        self._update_self(self._incarnation + 1, leaving=True)
        self._enqueue(self.name, left_update(self.name, self._incarnation))
        out: list[Effect] = [MemberChanged(self.members()[0], ALIVE)]
        self._gossip(now, out)
        return out

    def pushpull_request(self, join: bool = False) -> dict[str, Any]:
        """The body of a push-pull request: our full state."""
        return {"from": self.name, "join": join, "m": self._records()}

    def handle_pushpull(self, msg: Message, now: float) -> tuple[dict[str, Any], list[Effect]]:
        """Merge a peer's push-pull request; return our reply body (after merging) and effects."""
        out = self._merge(msg, now)
        return {"from": self.name, "join": False, "m": self._records()}, out

    def merge_pushpull_reply(self, msg: Message, now: float) -> list[Effect]:
        """Merge the reply to our push-pull request."""
        return self._merge(msg, now)

    # ---- message handlers (after the updates they carried were applied) -----------------

    def _on_ping(self, sender: str, src: Addr, now: float, out: list[Effect],
                 seq: int, target: str) -> None:
        if target != self.name:
            return
        m = self._members.get(sender)
        if m is not None and m.state in _LIVE:
            self._send(out, m.meta.addr, ACK, {"seq": seq}, sender)
        else:
            # Maybe a member that joined a moment ago; but `src` may be forged, so it gets a
            # bare ack, no bigger than the ping: nothing to amplify.
            self._send(out, src, ACK, {"seq": seq}, None, piggyback=False)

    def _on_ack(self, sender: str, src: Addr, now: float, out: list[Effect], seq: int) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            self._probe = None
            self.awareness.apply(-1)
            return
        r = self._relays.pop(seq, None)
        if r is not None:
            self._send(out, r.origin_addr, ACK, {"seq": r.origin_seq}, r.origin)

    def _on_nack(self, sender: str, src: Addr, now: float, out: list[Effect], seq: int) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            p.nacks += 1

    def _on_pingreq(self, sender: str, src: Addr, now: float, out: list[Effect],
                    seq: int, target: str) -> None:
        """Probe ``target`` for ``sender``. Both must be live members we know, and both are
        reached at the addresses we know them by, never one the message names (no reflection
        to outsiders); at most MAX_RELAYS such probes are open at once."""
        requester = self._members.get(sender)
        if requester is None or requester.state not in _LIVE or len(self._relays) >= MAX_RELAYS:
            return
        m = self._members.get(target)
        if m is None or m.state not in _LIVE:
            self._send(out, requester.meta.addr, NACK, {"seq": seq}, sender)
            return
        my_seq = self._next_seq()
        c = self.config
        # Nack early enough to reach the requester before its probe interval ends.
        self._relays[my_seq] = _Relay(sender, requester.meta.addr, seq,
                                      now + 0.8 * c.probe_timeout, now + c.probe_interval)
        self._send(out, m.meta.addr, PING, {"seq": my_seq, "to": target}, target)

    def _on_gossip(self, sender: str, src: Addr, now: float, out: list[Effect]) -> None:
        pass  # the updates were all there was

    # ---- probing ----------------------------------------------------------------------

    def _start_probe(self, now: float, out: list[Effect]) -> None:
        c = self.config
        target = self._next_probe_target()
        self._next_probe = now + self.awareness.scale(c.probe_interval)
        if target is None:
            return
        p = _Probe(target.name, self._next_seq(), now + self.awareness.scale(c.probe_timeout),
                   self._next_probe)
        self._probe = p
        self._send(out, target.meta.addr, PING, {"seq": p.seq, "to": target.name}, target.name)

    def _next_probe_target(self) -> _Member | None:
        order = self._probe_order
        for _ in range(2 * len(self._names) + 2):
            if self._probe_pos >= len(order):
                order[:] = self._names
                self._rng.shuffle(order)
                self._probe_pos = 0
                if not order:
                    return None
            name = order[self._probe_pos]
            self._probe_pos += 1
            m = self._members.get(name)
            if m is not None and m.state in _LIVE:
                return m
        return None

    def _probe_indirectly(self, p: _Probe, now: float, out: list[Effect]) -> None:
        p.indirect = True
        target = self._members.get(p.target)
        if target is None:
            return
        for m in self._random_members(self.config.indirect_checks, now, exclude=p.target):
            p.expected_nacks += 1
            self._send(out, m.meta.addr, PING_REQ, {"seq": p.seq, "to": p.target}, m.name)

    def _probe_failed(self, p: _Probe, now: float, out: list[Effect]) -> None:
        self._probe = None
        # Relays that did not even nack suggest our own network or CPU is the problem.
        self.awareness.apply(p.expected_nacks - p.nacks if p.expected_nacks else 1)
        m = self._members.get(p.target)
        if m is not None and m.state in _LIVE:
            self._apply_suspect(m.name, m.incarnation, self.name, now, out)

    # ---- applying updates (the incarnation rules) --------------------------------------
    #
    # An update about member m at incarnation i, against what we hold (m.inc, m.state):
    #   alive    i > m.inc                                  -> alive (refuted, or back)
    #   suspect  i > m.inc, or i == m.inc and m alive       -> suspect, Lifeguard timer starts
    #   suspect  i == m.inc and m suspect                   -> a confirmation: timer shrinks
    #   dead     i > m.inc, or i == m.inc and m live        -> dead (left likewise)
    #   anything else                                       -> ignored (old news)
    # Unknown members are added by alive updates only. About ourselves: suspect or dead at
    # i >= our incarnation -> refute with i + 1; alive at i > ours -> go to i + 1.

    def _apply_all(self, updates: Iterable[Update], now: float, out: list[Effect]) -> None:
        for u in updates:
            if u.state == ALIVE:
                self._apply_alive(u.name, u.incarnation, u.meta, now, out)  # type: ignore[arg-type]
            elif u.state == SUSPECT:
                self._apply_suspect(u.name, u.incarnation, u.origin, now, out)  # type: ignore[arg-type]
            else:
                self._apply_dead(u.name, u.incarnation, u.origin, u.state == LEFT, now, out)  # type: ignore[arg-type]

    def _apply_alive(self, name: str, inc: int, meta: Meta, now: float,
                     out: list[Effect]) -> None:
        if name == self.name:
            # Someone knows us by a later incarnation (e.g. from before a restart): go past it.
            if inc > self._incarnation and not self._leaving:
                self._refute(inc)
            return
        m = self._members.get(name)
        if m is None:
            m = _Member(name, meta, inc, ALIVE, now)
            self._add(m)
            self._enqueue(name, alive_update(name, inc, meta))
            out.append(MemberChanged(m.info(), None))
            return
        if inc <= m.incarnation:
            return
        previous = m.state
        self._change(m, ALIVE, inc, now, meta)
        self._enqueue(name, alive_update(name, inc, meta))
        if previous != ALIVE:
            out.append(MemberChanged(m.info(), previous))

    def _claimed_member(self, name: str, inc: int) -> _Member | None:
        """The member a suspect/dead claim at incarnation ``inc`` is about, when it is another
        known member and the claim is not older than what we know of it. A current claim
        about this member is refuted instead."""
        if name == self.name:
            if inc >= self._incarnation and not self._leaving:
                self.awareness.apply(1)
                self._refute(inc)
            return None
        m = self._members.get(name)
        if m is None or inc < m.incarnation:
            return None
        return m

    def _apply_suspect(self, name: str, inc: int, origin: str, now: float,
                       out: list[Effect]) -> None:
        m = self._claimed_member(name, inc)
        if m is None:
            return
        if inc == m.incarnation:
            if m.state in _GONE:
                return
            if m.state == SUSPECT:
                if m.suspicion.confirm(origin):  # type: ignore[union-attr]
                    self._enqueue(name, suspect_update(name, inc, origin))
                return
        previous = m.state
        self._change(m, SUSPECT, inc, now)
        c = self.config
        n = self.cluster_size
        k = int(c.suspicion_mult) - 2
        if n - 2 < k:
            k = 0
        min_t = suspicion_min_timeout(c.suspicion_mult, n, c.probe_interval)
        m.suspicion = Suspicion(origin, now, k, min_t, c.suspicion_max_timeout_mult * min_t)
        self._enqueue(name, suspect_update(name, inc, origin))
        if previous != SUSPECT:
            out.append(MemberChanged(m.info(), previous))

    def _apply_dead(self, name: str, inc: int, origin: str, left: bool, now: float,
                    out: list[Effect]) -> None:
        m = self._claimed_member(name, inc)
        if m is None:
            return
        if inc == m.incarnation and m.state in _GONE:
            return
        previous = m.state
        self._change(m, LEFT if left else DEAD, inc, now)
        self._enqueue(name, left_update(name, inc) if left else dead_update(name, inc, origin))
        if m.state != previous:
            out.append(MemberChanged(m.info(), previous))

    def _refute(self, claimed: int) -> None:
        self._update_self(claimed + 1, leaving=self._leaving)
        self._enqueue(self.name, alive_update(self.name, self._incarnation, self._meta))

    # ---- member bookkeeping ------------------------------------------------------------
    #
    # What ``members()`` reports changes only in ``_update_self``, ``_add``, ``_change`` and
    # ``_remove`` (``last_heard`` aside), and each of them raises ``_version``.

    def _update_self(self, incarnation: int, *, leaving: bool) -> None:
        """Change what ``members()`` reports about ourselves."""
        self._incarnation = incarnation
        self._leaving = leaving
        self._version += 1

    def _add(self, m: _Member) -> None:
        self._version += 1
        self._members[m.name] = m
        self._slot[m.name] = len(self._names)
        self._names.append(m.name)
        self._live += 1
        # A newcomer joins the rest of this round at a random place (memberlist does the same);
        # with the round over, the next shuffle includes it anyway.
        order = self._probe_order
        if self._probe_pos < len(order):
            order.insert(self._rng.randint(self._probe_pos, len(order)), m.name)

    def _change(self, m: _Member, state: str, incarnation: int, now: float,
                meta: Meta | None = None) -> None:
        """Move ``m`` to ``state`` at ``incarnation`` (with new ``meta``, if given)."""
        self._version += 1
        m.incarnation = incarnation
        if meta is not None:
            m.meta = meta
        was_live = m.state in _LIVE
        is_live = state in _LIVE
        self._live += is_live - was_live
        if is_live:
            self._gone.discard(m.name)
        else:
            self._gone.add(m.name)
        if state == SUSPECT:
            self._suspects.add(m.name)
        else:
            self._suspects.discard(m.name)
            m.suspicion = None
        m.state = state
        m.since = now

    def _reap(self, now: float) -> None:
        horizon = now - self.config.reap_after
        for name in [n for n in self._gone if self._members[n].since <= horizon]:
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Forget a dead or left member entirely."""
        self._version += 1
        self._gone.discard(name)
        del self._members[name]
        self._queue.discard(name)
        i = self._slot.pop(name)
        last = self._names.pop()
        if last != name:
            self._names[i] = last
            self._slot[last] = i

    def _random_members(self, k: int, now: float, exclude: str = "",
                        dead_too: bool = False) -> list[_Member]:
        """Up to ``k`` distinct random live members (and recently dead ones if ``dead_too``)."""
        names = self._names
        if not names or k <= 0:
            return []
        dead_since = now - self.config.gossip_to_dead_time
        picked: dict[str, _Member] = {}
        for _ in range(3 * k + 3):
            name = names[int(self._rng.random() * len(names))]
            if name == exclude or name in picked:
                continue
            m = self._members[name]
            if m.state in _LIVE or (
                dead_too and m.state == DEAD and m.since >= dead_since
            ):
                picked[name] = m
                if len(picked) == k:
                    break
        return list(picked.values())

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq

    # ---- dissemination -----------------------------------------------------------------

    def _enqueue(self, name: str, update: list[Any]) -> None:
        self._queue.put(name, update, _encoded_size(update))

    def _send(self, out: list[Effect], addr: Addr, kind: str, body: dict[str, Any],
              to: str | None, piggyback: bool = True, only: list[Any] | None = None) -> None:
        """Queue a datagram carrying as many updates as fit in ``max_datagram`` bytes (none
        without ``piggyback``, or just ``only``)."""
        body["from"] = self.name
        updates: list[Any] = list(only or ())
        body["u"] = updates
        size = len(self._codec.encode(kind, body)) + _ARRAY_HEADER_GROWTH
        if not piggyback:
            out.append(Send(addr, kind, body, size))
            return
        budget = self.config.max_datagram - size
        m = self._members.get(to) if to is not None else None
        if m is not None and m.state in _DOUBTED:
            # Tell the member what we hold, so that it can refute at once (a member back after
            # a leave may have joined through one that never heard of the leave).
            u = self._claim(m)
            usize = _encoded_size(u)
            if usize <= budget:
                updates.append(u)
                budget -= usize
                size += usize
        taken, used = self._queue.take(budget, self._retransmit_limit())
        updates.extend(taken)
        out.append(Send(addr, kind, body, size + used))

    def _tell_gone(self, m: _Member, now: float, out: list[Effect]) -> None:
        """A member we hold as dead or left is sending to us: it is back, perhaps having
        joined through a member that never heard it went, at an incarnation nobody else
        takes. Tell it what we hold so that it refutes at once: one update, sent to the
        address we know it by (never to the datagram's source), at most once a protocol
        period."""
        if now - m.told_at < self.config.probe_interval:
            return
        m.told_at = now
        self._send(out, m.meta.addr, GOSSIP, {}, m.name, piggyback=False, only=[self._claim(m)])

    def _claim(self, m: _Member) -> list[Any]:
        """The update saying what we hold `m` to be (suspect, dead or left)."""
        if m.state == LEFT:
            return left_update(m.name, m.incarnation)
        return (suspect_update if m.state == SUSPECT else dead_update)(
            m.name, m.incarnation, self.name)

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self.cluster_size)

    def _gossip(self, now: float, out: list[Effect]) -> None:
        for m in self._random_members(self.config.gossip_nodes, now, dead_too=True):
            if not self._queue:
                break
            self._send(out, m.meta.addr, GOSSIP, {}, m.name)

    # ---- push-pull ---------------------------------------------------------------------

    def _pushpull_interval(self) -> float:
        """memberlist's scaling: beyond 32 members, exchange full state less often."""
        n = self.cluster_size
        scale = 1 if n <= 32 else math.ceil(math.log2(n) - 5) + 1
        return self.config.pushpull_interval * scale

    def _schedule_pushpull(self, now: float, out: list[Effect]) -> None:
        for m in self._random_members(1, now):
            out.append(PushPull(m.meta.addr, m.name))
        dead = [n for n in self._gone if self._members[n].state == DEAD]
        if dead:  # try to reach across a partition, as Serf's reconnect does
            m = self._members[self._rng.choice(sorted(dead))]
            out.append(PushPull(m.meta.addr, m.name))

    def _records(self) -> list[list[Any]]:
        recs = [record(self.name, LEFT if self._leaving else ALIVE, self._incarnation, self._meta)]
        recs.extend(record(m.name, m.state, m.incarnation, m.meta)
                    for m in self._members.values())
        return recs

    def _merge(self, msg: Message, now: float) -> list[Effect]:
        if msg.type != PUSH_PULL:
            raise BadMessage(f"expected {PUSH_PULL}, got {msg.type[:40]!r}")
        sender = check_name(msg.body.get("from"))
        raw = msg.body.get("m")
        if type(raw) is not list:
            raise BadMessage(f"{PUSH_PULL}: member records must be an array")
        records = [parse_record(r) for r in raw]
        out: list[Effect] = []
        m = self._members.get(sender)
        if m is not None:
            m.last_heard = now
        for r in records:
            if r.state == ALIVE:
                self._apply_alive(r.name, r.incarnation, r.meta, now, out)  # type: ignore[arg-type]
            elif r.state == LEFT:
                self._apply_dead(r.name, r.incarnation, r.name, True, now, out)
            else:
                # Someone else's "dead" becomes our suspicion (memberlist's rule): the member
                # gets a chance to refute before we believe it.
                self._apply_suspect(r.name, r.incarnation, self.name, now, out)
        return out


def _seq(body: dict[str, Any]) -> int:
    return check_int(body.get("seq"), "seq", _MAX_SEQ)


# Each datagram type's own fields, validated: body -> the handler's extra arguments.
_FIELDS: dict[str, Any] = {
    PING: lambda b: (_seq(b), check_name(b.get("to"))),
    ACK: lambda b: (_seq(b),),
    NACK: lambda b: (_seq(b),),
    PING_REQ: lambda b: (_seq(b), check_name(b.get("to"))),
    GOSSIP: lambda b: (),
}
