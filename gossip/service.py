"""GossipService: the Membership core on a real (or fake) reactor; what a peer embeds.

It owns the UDP port, drives the core's timers through ``reactor.callLater``, and opens its own
outgoing TCP connections for push-pull. With a ``sealer`` (gossip.crypto) every datagram is
sealed on the way out and must open on the way in; ``tls_for(addr, endpoint)`` wraps
push-pull connections (in TLS).
It does not listen on TCP: whoever owns the TCP port (the peer's RPC server, or the standalone
agent's ``StreamServer``) routes every stream message whose type starts with ``gossip.`` to
``handle_stream_message``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.logger import Logger

from gossip.crypto import DatagramSealer
from gossip.membership import (
    PUSH_PULL,
    Config,
    Effect,
    MemberChanged,
    MemberInfo,
    Membership,
    PushPull,
    Send,
)
from gossip.transport import DatagramAdapter, exchange
from gossip.updates import Addr, BadMessage, Meta
from gossip.wire import MAX_DATAGRAM, PROTOCOL_VERSION, Codec, Message, WireError

log = Logger()


@dataclass
class GossipCounters:
    """Running totals the peer can export (e.g. as Prometheus counters)."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    datagrams_dropped: int = 0  # malformed, unauthenticated, wrong version or invalid
    send_errors: int = 0
    pushpulls: int = 0
    pushpull_failures: int = 0


class GossipService(Service):
    """SWIM membership for one member, on ``reactor`` (which must provide time, UDP and TCP)."""

    def __init__(
        self,
        name: str,
        node_id: str,
        host: str,
        port: int,
        http: Addr,
        seeds: Sequence[Addr] = (),
        *,
        codec: Codec,
        reactor: Any,
        config: Config | None = None,
        rng: random.Random | None = None,
        join_retry_interval: float = 1.0,
        stream_timeout: float = 5.0,
        leave_timeout: float = 3.0,
        sealer: DatagramSealer | None = None,
        tls_for: Callable[[Addr, IStreamClientEndpoint], IStreamClientEndpoint] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`wall_clock` dates sealed datagrams (their sequence numbers are wall-clock time, to
        stay fresh across restarts); every timer runs on the reactor's own clock."""
        self.name = name
        self.node_id = node_id
        self.host = host
        self.port = port
        self.http = http
        self.seeds = list(seeds)
        self.codec = codec
        self.sealer = sealer
        self._wall_clock = wall_clock
        self._tls_for = tls_for
        self.config = config or Config()
        self.counters = GossipCounters()
        self.joined: defer.Deferred[None] = defer.Deferred()
        self._reactor = reactor
        self._rng = rng or random.Random()
        self._join_retry_interval = join_retry_interval
        self._stream_timeout = stream_timeout
        self._leave_timeout = leave_timeout
        self._core: Membership | None = None
        self._version_base = 0  # keeps members_version growing across restarts
        self._udp: IListeningPort | None = None
        self._timer: IDelayedCall | None = None
        self._join_timer: IDelayedCall | None = None
        self._subscribers: list[Callable[[MemberChanged], None]] = []
        self._leave_waiters: list[defer.Deferred[None]] = []
        self._left = False

    # ---- lifecycle ---------------------------------------------------------------------

    def startService(self) -> None:
        """Bind the UDP port, announce ourselves and start joining through the seeds."""
        super().startService()
        self._udp = self._reactor.listenUDP(
            self.port, DatagramAdapter(self._datagram), interface=self.host,
            maxPacketSize=MAX_DATAGRAM * 2)
        self.port = self._udp.getHost().port
        meta = Meta(self.node_id, (self.host, self.port), self.http, PROTOCOL_VERSION)
        self._version_base = self.members_version() + 1
        self._core = Membership(self.name, meta, codec=self.codec, rng=self._rng,
                                now=self._reactor.seconds(), config=self.config)
        self._run(self._core.start())
        own = {(self.host, self.port)}
        self.seeds = [s for s in self.seeds if s not in own]
        if self.seeds:
            self._try_join()
        else:
            self.joined.callback(None)

    def stopService(self) -> defer.Deferred[None] | None:
        """Stop timers and close the UDP port (call ``leave`` first for a graceful exit)."""
        super().stopService()
        for call in (self._timer, self._join_timer):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._join_timer = None
        udp, self._udp = self._udp, None
        return defer.maybeDeferred(udp.stopListening) if udp is not None else None

    def leave(self) -> defer.Deferred[None]:
        """Announce a graceful leave; fires once it was gossiped its full count (or timed out)."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._left:
            d.callback(None)
            return d
        self._leave_waiters.append(d)
        if len(self._leave_waiters) == 1:
            deadline = self._reactor.seconds() + self._leave_timeout
            self._run(self.core.leave(self._reactor.seconds()))
            self._watch_leave(deadline)
        return d

    # ---- what the peer reads ------------------------------------------------------------

    @property
    def core(self) -> Membership:
        """The membership state machine (exists once the service has started)."""
        if self._core is None:
            raise RuntimeError("GossipService has not been started")
        return self._core

    def members(self) -> list[MemberInfo]:
        """Every known member, ourselves first (empty before start)."""
        return self._core.members() if self._core is not None else []

    def members_version(self) -> int:
        """A number that grows whenever ``members()`` reports something new (``last_heard`` aside).

        It also grows when the service (re)starts with a new membership core.
        """
        core = self._core
        return self._version_base + core.version if core is not None else 0

    def subscribe(self, callback: Callable[[MemberChanged], None]) -> Callable[[], None]:
        """Call ``callback`` on every membership event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def handle_stream_message(self, msg: Message) -> Message:
        """Answer one stream message of a ``gossip.*`` type; raises WireError if it is invalid."""
        if msg.type != PUSH_PULL:
            raise WireError(f"unknown gossip stream message type {msg.type[:40]!r}")
        try:
            reply, effects = self.core.handle_pushpull(msg, self._reactor.seconds())
        except BadMessage as e:
            raise WireError(f"{PUSH_PULL}: {e}") from None
        self._run(effects)
        return Message(PUSH_PULL, reply)

    # ---- inputs ----------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Addr) -> None:
        c = self.counters
        c.datagrams_received += 1
        c.bytes_received += len(data)
        if self._core is None:
            return
        try:
            if self.sealer is not None:
                _, data = self.sealer.open(data, self._wall_clock())
            msg = self.codec.decode(data)
            effects = self._core.handle(msg, addr, self._reactor.seconds())
        except (WireError, BadMessage) as e:
            c.datagrams_dropped += 1
            log.debug("dropped datagram from {addr}: {e}", addr=addr, e=e)
            return
        self._run(effects)

    def _wake(self) -> None:
        self._timer = None
        if self._core is not None:
            self._run(self._core.tick(self._reactor.seconds()))

    # ---- effects and timers -----------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        for e in effects:
            if type(e) is Send:
                self._send(e)
            elif type(e) is PushPull:
                self._pushpull(e.addr)
            elif type(e) is MemberChanged:
                for callback in list(self._subscribers):
                    try:
                        callback(e)
                    except Exception:
                        log.failure("membership subscriber failed")
        self._reschedule()

    def _send(self, e: Send) -> None:
        if self._udp is None:
            return
        data = self.codec.encode(e.type, e.body)
        if self.sealer is not None:
            data = self.sealer.seal(data, self._wall_clock())
        try:
            self._udp.write(data, e.addr)  # type: ignore[attr-defined]
        except OSError as err:
            self.counters.send_errors += 1
            log.debug("send to {addr} failed: {err}", addr=e.addr, err=err)
            return
        self.counters.datagrams_sent += 1
        self.counters.bytes_sent += len(data)

    def _reschedule(self) -> None:
        if self._core is None or not self.running:
            return
        when = self._core.next_wakeup()
        delay = max(0.0, when - self._reactor.seconds())
        t = self._timer
        if t is not None and t.active():
            if t.getTime() <= when:
                return
            t.cancel()
        self._timer = self._reactor.callLater(delay, self._due)

    def _due(self) -> None:
        # Tick on the next reactor iteration, after pending I/O: a process that was paused must
        # read the acks waiting in its socket before its overdue timers conclude nobody answered.
        self._timer = self._reactor.callLater(0, self._wake)

    def _watch_leave(self, deadline: float) -> None:
        now = self._reactor.seconds()
        if self.core.leave_done or now >= deadline:
            self._left = True
            waiters, self._leave_waiters = self._leave_waiters, []
            for d in waiters:
                d.callback(None)
            return
        self._reactor.callLater(min(0.05, deadline - now), self._watch_leave, deadline)

    # ---- push-pull ---------------------------------------------------------------------

    def _pushpull(self, addr: Addr, join: bool = False) -> defer.Deferred[bool]:
        """Exchange full state with ``addr``; fires True when the reply was merged."""
        return defer.Deferred.fromCoroutine(self._exchange(addr, join))

    async def _exchange(self, addr: Addr, join: bool) -> bool:
        self.counters.pushpulls += 1
        try:
            tls_for = self._tls_for
            tls = None if tls_for is None else lambda endpoint: tls_for(addr, endpoint)
            reply = await exchange(self._reactor, self._reactor, self.codec, addr, PUSH_PULL,
                                   self.core.pushpull_request(join), self._stream_timeout, tls)
            effects = self.core.merge_pushpull_reply(reply, self._reactor.seconds())
        except Exception as e:
            self.counters.pushpull_failures += 1
            log.debug("push-pull with {addr} failed: {e}", addr=addr, e=e)
            return False
        if self.running:
            self._run(effects)
        return True

    def _try_join(self) -> None:
        self._join_timer = None
        defer.Deferred.fromCoroutine(self._join_once())

    async def _join_once(self) -> None:
        """Exchange state with every seed at once, as memberlist's Join does: peers started
        together then all meet directly. (Joining through the first seed that answered, a
        peer knew only the members that seed had heard of yet, and waited for the others to
        reach it by gossip or by a periodic push-pull, tens of seconds away.)"""

        def answered(merged: bool) -> bool:
            if merged and not self.joined.called:
                self.joined.callback(None)
            return merged

        exchanges = [self._pushpull(addr, join=True).addCallback(answered) for addr in self.seeds]
        if any(await defer.gatherResults(exchanges)):
            return
        if self.running:
            log.info("no seed answered; retrying in {s}s", s=self._join_retry_interval)
            self._join_timer = self._reactor.callLater(self._join_retry_interval, self._try_join)
