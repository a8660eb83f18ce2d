"""One `qfs peer` process: storage, gossip, peer RPC, the HTTP API and background jobs, composed
as one Twisted MultiService. The only module that touches the real reactor.

Start-up order: the data directory is locked and opened before any socket is bound (a second
peer on the same directory fails at once); services start in order and stop in reverse. On
SIGTERM the peer first hands its share to the peers that take it over and gossip announces the
leave (peer.repair.departure), then the services stop.

Clocks: the peer's reactor runs on the monotonic clock (`run_on_monotonic_clock`), so every
timer and every liveness or expiry decision made from `reactor.seconds()` (gossip, suspicion,
`--dead-after`, RPC timeouts, background rounds) ignores wall-clock steps; the wall clock
(`time.time`) is used only for what is meant as a date: file mtimes and the floor of version
counters, whose high-water mark the data directory keeps.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import internet, service
from twisted.internet import defer, task, threads
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web import server

from gossip import crypto
from gossip.membership import Config as GossipConfig
from gossip.service import GossipService
from gossip.updates import Addr
from gossip.wire import MAX_DATAGRAM, Codec, WireError, load_cluster_key
from peer.allocator import keep_buffers_in_heap
from peer.api.auth import Authenticator, load_admin_token
from peer.api.http import ApiChannel, ApiResource, StreamingRequest
from peer.api.s3.keys import S3Keys
from peer.cluster import ClusterView
from peer.cluster_setup import ClusterDir
from peer.config import PeerConfig
from peer.connections import ConnectionLimit
from peer.coordinator import Coordinator, QuorumSettings
from peer.quorum import CounterSource
from peer.record_writer import RecordWriter
from peer.repair.antientropy import AntiEntropy, let_reactor_run
from peer.repair.collector import GarbageCollector
from peer.repair.departure import Departure
from peer.repair.handoff import HintedHandoff
from peer.repair.rejoin import Rejoin, swept_rounds
from peer.repair.scrubber import Scrubber
from peer.replica import Replica
from peer.rpc import RpcClient, RpcServerFactory, send_small_writes_at_once
from peer.tls import (
    BulkTLSFactory,
    MemberRpcServerFactory,
    PeerTls,
    TlsError,
    TlsFiles,
    read_keyring,
)
from storage.datadir import DataDir, DataDirLocked

log = logging.getLogger(__name__)

HANDOFF_INTERVAL = 1.0
REJOIN_INTERVAL = 0.25
OBSERVE_INTERVAL = 1.0
PREPARE_TIMEOUT = 2.0
SCRUB_PAUSE = 10.0
TLS_RELOAD_INTERVAL = 60.0  # seconds between re-reads of the TLS files (SIGHUP: at once)
INSECURE_WARNING = (
    "INSECURE: this peer runs without TLS and gossip encryption (--insecure): anyone on its "
    "network can read and change its data and membership"
)


class Node(service.MultiService):
    """Everything one peer runs."""

    def __init__(self, config: PeerConfig, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        key = load_cluster_key(config.cluster_key_file) if config.cluster_key_file else None
        self.codec = Codec(key)
        self.tls: PeerTls | None = None
        sealer = None
        if config.tls_dir is not None:
            self.tls, sealer = _load_tls(config)
        self.datadir = DataDir(config.data)
        self.node_id = self.datadir.node_id

        def run_in_thread(f: Any, *args: Any) -> defer.Deferred[Any]:
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

        self.record_writer = RecordWriter(
            self.datadir.records, lambda f: reactor.callLater(0, f), reactor.callFromThread
        )
        self.replica = Replica(
            self.datadir.blocks, self.datadir.records, run_in_thread, self.record_writer.put_many
        )
        self.replica.state.verified = False  # until Rejoin has looked at the stored data
        self.gossip = GossipService(
            config.name,
            self.node_id,
            config.bind,
            config.port,
            (advertised_http_host(config.http_bind), config.http),
            list(config.join),
            codec=self.codec,
            reactor=reactor,
            config=GossipConfig(
                probe_interval=config.probe_interval,
                probe_timeout=config.probe_interval / 2,
                gossip_interval=config.probe_interval / 5,
                max_datagram=MAX_DATAGRAM - (crypto.OVERHEAD if sealer else 0),
            ),
            sealer=sealer,
            tls_for=self._gossip_tls if self.tls is not None else None,
        )
        self.cluster = ClusterView(
            self.node_id,
            self.gossip.members,
            reactor.seconds,
            config.dead_after,
            version=self.gossip.members_version,
        )
        self._clients: dict[str, RpcClient] = {}
        self.coordinator = Coordinator(
            self.cluster,
            QuorumSettings(
                config.replicas, config.read_quorum, config.write_quorum, config.block_size
            ),
            self.replica,
            self._client_for,
            config.name,
            clock=time.time,
            counters=CounterSource(
                time.time, self.datadir.counter_mark.value, self.datadir.counter_mark.store
            ),
        )
        self.collector = GarbageCollector(
            self.coordinator,
            self.replica,
            run_in_thread,
            time.time,
            time.monotonic,
            config.gc_grace,
            config.horizon,
            config.gc_interval,
            lambda: self.rejoin.checked,
            self.datadir.reserve,
        )
        self.handoff = HintedHandoff(
            self.coordinator,
            self.datadir.blocks,
            self.datadir.records,
            run_in_thread,
            self.collector.gone,
        )
        self.anti_entropy = AntiEntropy(
            self.coordinator,
            self.replica,
            run_in_thread,
            reactor.seconds,
            lambda: (self.collector.state.accounted, self.collector.state.swept),
            lambda reason: self.rejoin.stale(reason),
            lambda: self.rejoin.checked,
            pause=let_reactor_run,
        )
        self.departure = Departure(
            self.coordinator,
            self.replica,
            self.anti_entropy,
            self.handoff,
            run_in_thread,
            reactor.seconds,
            lambda: self.rejoin.checked,
        )
        self.rejoin = Rejoin(
            self.coordinator,
            self.replica,
            self.collector,
            self.anti_entropy,
            run_in_thread,
            expects_peers=bool(config.join),
        )
        self.scrubber = Scrubber(
            self.coordinator,
            self.datadir.blocks,
            run_in_thread,
            lambda seconds: task.deferLater(reactor, seconds),
            config.scrub_rate,
        )
        handlers = {
            **self.replica.handlers(),
            **self.anti_entropy.handlers(),
            **self.collector.handlers(),
        }
        rpc_factory_class = RpcServerFactory if self.tls is None else MemberRpcServerFactory
        self.rpc = rpc_factory_class(
            self.codec,
            handlers,
            self.gossip.handle_stream_message,
            clock=reactor,
            idle_timeout=config.idle_timeout,
        )
        self.requests: dict[tuple[str, int], int] = {}
        self._rounds: set[defer.Deferred[Any]] = set()  # background rounds in flight
        auth = None
        s3_keys = None
        if config.admin_token_file is not None:
            admin_token = load_admin_token(config.admin_token_file)
            auth = Authenticator(admin_token, self.coordinator, reactor.seconds)
            s3_keys = S3Keys(admin_token, self.coordinator, reactor.seconds)
        self.api = ApiResource(
            self.coordinator, self.cluster_json, self.metrics_text, self._count, auth, s3_keys
        )
        self.site = self._site(self.api, StreamingRequest)
        self.rpc_listener = ConnectionLimit(self.rpc)
        self.http_listener = ConnectionLimit(NoDelayFactory(self.site))
        self.s3_listener: ConnectionLimit | None = None

        rpc_factory: Any = self.rpc_listener
        http_factory: Any = self.http_listener
        if self.tls is not None:
            rpc_factory = BulkTLSFactory(self.tls.peer_server(), False, rpc_factory)
            http_factory = BulkTLSFactory(self.tls.https_server(), False, http_factory)
            internet.TimerService(TLS_RELOAD_INTERVAL, self.reload_tls).setServiceParent(self)
        internet.TCPServer(config.port, rpc_factory, interface=config.bind).setServiceParent(self)
        self.gossip.setServiceParent(self)
        for interval, job, what in (
            (REJOIN_INTERVAL, self.rejoin.step, "rejoin"),
            (OBSERVE_INTERVAL, self.collector.observe, "known peers"),
            (HANDOFF_INTERVAL, self.handoff.deliver, "hinted handoff"),
            (config.anti_entropy_interval, self.anti_entropy.run_round, "anti-entropy"),
            (config.gc_interval, self.collector.run_round, "garbage collection"),
            (SCRUB_PAUSE, self.scrubber.run_pass, "scrub"),
        ):
            internet.TimerService(interval, self._background, job, what).setServiceParent(self)
        internet.TCPServer(config.http, http_factory, interface=config.http_bind).setServiceParent(
            self
        )
        if config.s3_port is not None:  # the S3 API beside the HTTP API, HTTPS when it is
            # imported here: a peer without it starts ~45 ms sooner (measured)
            from peer.api.s3.server import S3Request, S3Resource

            s3 = S3Resource(
                self.coordinator,
                s3_keys,
                time.time,
                reactor.seconds,
                self._count,
                config.s3_domain,
                config.s3_upload_expiry,
                run_in_thread,
            )
            internet.TimerService(
                s3.multipart.sweep_interval, self._background, s3.multipart.expire,
                "multipart expiry",
            ).setServiceParent(self)
            self.s3_listener = ConnectionLimit(NoDelayFactory(self._site(s3, S3Request)))
            s3_factory: Any = self.s3_listener
            if self.tls is not None:
                s3_factory = BulkTLSFactory(self.tls.https_server(), False, s3_factory)
            internet.TCPServer(
                config.s3_port, s3_factory, interface=config.http_bind
            ).setServiceParent(self)
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(self))

    def _site(self, api: Any, request_factory: Any) -> _ApiSite:
        """A twisted.web site for one front end, with the same limits on every one: a header
        deadline, an idle timeout, no form parsing, no tracebacks."""
        site = _ApiSite(
            api,
            requestFactory=request_factory,
            reactor=self.reactor,
            timeout=self.config.idle_timeout,
            parsePOSTFormSubmission=False,  # no route takes a form; never parse one
        )
        site.header_timeout = self.config.idle_timeout
        site.displayTracebacks = False
        return site

    async def prepare(self) -> None:
        """Before any service starts, check the stored data against the peers this one joins,
        so no peer ever sees it serve data it has not checked (peer.repair.rejoin)."""
        await self.rejoin.start()
        if self.replica.state.verified or not self.config.join:
            return
        seed_tls = None if self.tls is None else functools.partial(self.tls.dial, member=None)
        seeds = [
            RpcClient(self.reactor, self.codec, host, port, seed_tls)
            for host, port in self.config.join
        ]
        try:
            swept = await swept_rounds(
                (
                    f"seed {seed.host}:{seed.port}",
                    functools.partial(seed.call, "gc.generation", {}, PREPARE_TIMEOUT),
                )
                for seed in seeds
            )
        finally:
            for seed in seeds:
                seed.close()
        if swept:
            await self.rejoin.decide(swept)

    def _client_for(self, node_id: str) -> RpcClient | None:
        peer = self.cluster.peers().get(node_id)
        if peer is None:
            return None
        client = self._clients.get(node_id)
        if client is None or (client.host, client.port) != tuple(peer.addr):
            if client is not None:
                client.close()
            tls = None if self.tls is None else functools.partial(self.tls.dial, member=peer.name)
            client = RpcClient(self.reactor, self.codec, peer.addr[0], peer.addr[1], tls)
            self._clients[node_id] = client
        return client

    def _gossip_tls(self, addr: Addr, endpoint: Any) -> Any:
        """TLS for a push-pull with `addr`: checked to be that member's certificate when `addr`
        is a known member's, any cluster certificate for a seed not met yet."""
        assert self.tls is not None
        names = [m.name for m in self.gossip.members() if tuple(m.addr) == tuple(addr)]
        return self.tls.dial(endpoint, names[0] if len(names) == 1 else None)

    def reload_tls(self) -> None:
        """Re-read the certificate, key, CA and gossip keyring (SIGHUP, and every minute): new
        connections use the new certificate, datagrams the new keyring. Files that cannot be
        used are logged and the ones in use are kept."""
        if self.tls is None or self.config.tls_dir is None:
            return
        self.tls.reload()
        sealer = self.gossip.sealer
        try:
            keyring = read_keyring(ClusterDir(self.config.tls_dir).gossip_keys)
        except TlsError as e:
            log.error("gossip keyring not reloaded, still using the previous one: %s", e)
            return
        if sealer is not None and keyring != sealer.keyring:
            sealer.keyring = keyring
            log.info("gossip keyring reloaded: %s (primary first)", ", ".join(keyring.ids()))

    def _background(self, job: Callable[[], Awaitable[Any]], what: str) -> defer.Deferred[Any]:
        """Run one round of a background job; a failure is logged and the next round runs. The
        round is kept in `_rounds` until it ends, so that stopping cancels it instead of waiting
        for it (every job survives being cut short: it survives SIGKILL)."""
        round_ = defer.ensureDeferred(job())
        self._rounds.add(round_)

        def ended(result: Any) -> None:
            self._rounds.discard(round_)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.warning("%s round failed: %s", what, result.getTraceback())

        round_.addBoth(ended)
        return round_

    def _count(self, route: str, status: int) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1

    def cluster_json(self) -> dict[str, Any]:
        """The body of GET /v1/cluster."""
        now = self.reactor.seconds()
        scheme = "https" if self.tls is not None else "http"
        members = []
        for member in sorted(self.gossip.members(), key=lambda m: m.name):
            members.append(
                {
                    "name": member.name,
                    "id": member.node_id,
                    "state": member.state,
                    "incarnation": member.incarnation,
                    "addr": f"{member.addr[0]}:{member.addr[1]}",
                    "http": f"{scheme}://{member.http[0]}:{member.http[1]}",
                    "last_heard_s": (
                        None if member.last_heard is None else round(now - member.last_heard, 3)
                    ),
                }
            )
        settings = self.coordinator.settings
        repair, scrub, gc = (
            self.anti_entropy.counters,
            self.scrubber.counters,
            self.collector.counters,
        )
        if self.tls is None:
            security: dict[str, Any] = {"insecure": True, "warning": INSECURE_WARNING}
        else:
            sealer = self.gossip.sealer
            security = {
                "insecure": False,
                "certificate": self.tls.describe(),
                "gossip_keys": sealer.keyring.ids() if sealer is not None else [],
            }
        return {
            "self": self.config.name,
            "id": self.node_id,
            "security": security,
            "members": members,
            "config": {
                "n": settings.n,
                "r": settings.r,
                "w": settings.w,
                "block_size": settings.block_size,
            },
            "repair": {
                "under_replicated": repair.under_replicated,
                "hints_pending": self.handoff.pending(),
                "anti_entropy_rounds": repair.rounds,
                "anti_entropy_ticks": repair.ticks,
                "last_round_s": (
                    None if repair.last_round_at is None else round(now - repair.last_round_at, 3)
                ),
                "records_repaired": repair.records_received,
                "blocks_repaired": repair.blocks_pulled + repair.blocks_pushed,
                "bytes_moved": repair.bytes_moved,
                "handed_over": repair.handed_over,
                "scrub_passes": scrub.passes,
                "scrub_position": scrub.position,
                "scrub_blocks_verified": scrub.verified,
                "corrupt_blocks_found": scrub.corrupt,
                "corrupt_blocks_repaired": scrub.repaired,
                "gc_blocks_removed": gc.blocks_removed,
                "gc_bytes_removed": gc.bytes_removed,
                "gc_tombstones_purged": gc.tombstones_purged,
                "gc_rounds": gc.rounds,
                "gc_last_skip": gc.last_skip_reason,
                "gc_generation": {
                    "accounted": self.collector.state.accounted,
                    "swept": self.collector.state.swept,
                },
                "known_peers_away": {
                    self.collector.state.name_of(node): round(seconds, 1)
                    for node, seconds in self.collector.state.away().items()
                },
                "peers_forgotten": gc.forgotten,
                "hints_rehomed": self.handoff.rehomed,
                "rejoin": self.rejoin.describe(),
            },
        }

    def metrics_text(self) -> bytes:
        """Prometheus exposition of this peer's counters."""
        return generate_latest(self.registry)

    def stopService(self) -> defer.Deferred[Any]:
        """Leave the cluster gracefully, stop every service, then release the data directory."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.scrubber.stop()  # a pass paced for hours must not hold up the shutdown
        if self.gossip.running:
            try:
                await self.departure.leave(self.gossip.leave, self.config.handover_timeout)
            except Exception as e:
                log.warning("graceful leave failed: %s", e)
        for round_ in list(self._rounds):  # nor a round waiting on a peer that is stopping too
            round_.cancel()
        try:
            await defer.maybeDeferred(super().stopService)
        finally:
            for client in self._clients.values():
                client.close()
            self.record_writer.stop()
            self.datadir.close()


class _ApiSite(server.Site):
    """twisted.web's Site without its access log: /metrics counts requests by route and
    status, and formatting a log line per request cost ~1% of a busy peer's CPU (profiled).
    Its channels are ApiChannels (a deadline for request headers)."""

    protocol = ApiChannel
    header_timeout = ApiChannel.header_timeout

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.header_timeout = self.header_timeout
        return channel

    def log(self, request: server.Request) -> None:
        pass


class _NoDelayProtocol(policies.ProtocolWrapper):
    def makeConnection(self, transport: Any) -> None:
        send_small_writes_at_once(transport)
        super().makeConnection(transport)


class NoDelayFactory(policies.WrappingFactory):
    """Serves `factory`'s protocol with TCP_NODELAY set (see send_small_writes_at_once)."""

    protocol = _NoDelayProtocol


def _load_tls(config: PeerConfig) -> tuple[PeerTls, crypto.DatagramSealer]:
    """The peer's TLS contexts and gossip sealer from its --tls-dir; TlsError naming what is
    missing or wrong."""
    assert config.tls_dir is not None
    files = ClusterDir(config.tls_dir)
    if not files.ca_cert.exists():
        raise TlsError(
            f"{files.ca_cert} is missing: for the demo cluster run './dev qfs demo --init' first; "
            f"otherwise create a cluster with 'qfs cluster init DIR' and this peer's certificate "
            f"with 'qfs cluster cert DIR {config.name} --addr HOST'"
        )
    tls = PeerTls(TlsFiles(files.ca_cert, files.cert(config.name), files.key(config.name)))
    if tls.name != config.name:
        raise TlsError(f"{files.cert(config.name)} is issued for {tls.name!r}, not {config.name!r}")
    return tls, crypto.DatagramSealer(read_keyring(files.gossip_keys), config.name)


def advertised_http_host(bind: str) -> str:
    """The host other peers and clients should use to reach an HTTP API bound to `bind`."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


class _NodeCollector:
    """Reads a node's counters at scrape time (no metric objects scattered through the code)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Any:
        node = self._node
        requests = CounterMetricFamily(
            "qfs_http_requests", "HTTP requests served", labels=["route", "status"]
        )
        for (route, status), count in sorted(node.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "qfs_rpc_bad_frames",
            "malformed or unauthenticated RPC frames",
            value=node.rpc.counters.bad_frames,
        )
        yield CounterMetricFamily(
            "qfs_rpc_requests", "peer RPC requests served", value=node.rpc.counters.requests
        )
        auth = node.api.auth
        yield CounterMetricFamily(
            "qfs_auth_failures",
            "requests whose token was refused",
            value=auth.failures if auth else 0,
        )
        yield CounterMetricFamily(
            "qfs_auth_rate_limited",
            "requests refused unchecked: their address failed to authenticate too often",
            value=auth.limited if auth else 0,
        )
        yield CounterMetricFamily(
            "qfs_rpc_timeouts",
            "RPC connections closed for not completing a frame in time",
            value=node.rpc.counters.timeouts,
        )
        refused = CounterMetricFamily(
            "qfs_connections_refused", "connections over a listener's caps", labels=["listener"]
        )
        refused.add_metric(["rpc"], node.rpc_listener.refused)
        refused.add_metric(["http"], node.http_listener.refused)
        if node.s3_listener is not None:
            refused.add_metric(["s3"], node.s3_listener.refused)
        yield refused
        yield CounterMetricFamily(
            "qfs_read_repairs",
            "stale replicas repaired after reads",
            value=node.coordinator.read_repairs,
        )
        yield CounterMetricFamily(
            "qfs_hints_delivered",
            "hinted writes handed to their home",
            value=node.handoff.delivered,
        )
        yield CounterMetricFamily(
            "qfs_gossip_dropped_datagrams",
            "malformed or unauthenticated gossip datagrams",
            value=node.gossip.counters.datagrams_dropped,
        )
        yield GaugeMetricFamily(
            "qfs_hints_pending",
            "hinted writes waiting for their home",
            value=node.handoff.pending(),
        )
        repair = node.anti_entropy.counters
        for name, help_text, value in (
            ("qfs_antientropy_rounds", "anti-entropy rounds run", repair.rounds),
            ("qfs_antientropy_digest_bytes", "digest bytes exchanged", repair.digest_bytes),
            ("qfs_repair_records", "records received by anti-entropy", repair.records_received),
            (
                "qfs_repair_blocks",
                "blocks copied by anti-entropy",
                repair.blocks_pulled + repair.blocks_pushed,
            ),
            ("qfs_repair_bytes_moved", "bytes of data moved by anti-entropy", repair.bytes_moved),
            ("qfs_handed_over", "items dropped after their homes confirmed", repair.handed_over),
            ("qfs_scrub_blocks_verified", "blocks re-verified", node.scrubber.counters.verified),
            (
                "qfs_scrub_bytes_verified",
                "bytes re-verified",
                node.scrubber.counters.bytes_verified,
            ),
            (
                "qfs_scrub_corrupt",
                "corrupt blocks found by the scrubber",
                node.scrubber.counters.corrupt,
            ),
            ("qfs_scrub_repaired", "corrupt blocks re-fetched", node.scrubber.counters.repaired),
            (
                "qfs_gc_blocks_removed",
                "unreferenced blocks removed",
                node.collector.counters.blocks_removed,
            ),
            (
                "qfs_gc_tombstones_purged",
                "tombstones purged",
                node.collector.counters.tombstones_purged,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily(
            "qfs_under_replicated",
            "local items with a home replica down",
            value=repair.under_replicated,
        )
        yield GaugeMetricFamily(
            "qfs_records",
            "record keys stored on this peer (hints included)",
            value=node.datadir.records.count(),
        )
        stats = node.datadir.blocks.stats()
        yield GaugeMetricFamily("qfs_blocks", "blocks stored on this peer", value=stats.count)
        yield GaugeMetricFamily("qfs_block_bytes", "bytes of blocks stored", value=stats.bytes)
        yield GaugeMetricFamily(
            "qfs_blocks_quarantined", "blocks that failed verification", value=stats.quarantined
        )
        states = GaugeMetricFamily("qfs_members", "members by gossip state", labels=["state"])
        for state in ("alive", "suspect", "dead", "left"):
            count = sum(1 for m in node.gossip.members() if m.state == state)
            states.add_metric([state], count)
        yield states


def run_on_monotonic_clock(reactor: Any, clock: Callable[[], float] = time.monotonic) -> None:
    """Make `reactor` schedule every delayed call by `clock` instead of the wall clock.

    Twisted's reactors read `time.time` (twisted/twisted#2424), so a wall clock stepped
    forward fires every pending timer at once (every suspicion expires) and one stepped back
    stalls them all. The reactor reads `self.seconds()` wherever it schedules or runs a timer,
    so replacing it before anything is scheduled is enough; then `reactor.seconds()` is no
    date, and code wanting one reads `time.time`."""
    if reactor.getDelayedCalls():
        raise RuntimeError("the reactor's clock must be replaced before anything is scheduled")
    reactor.seconds = clock


def run_peer(config: PeerConfig) -> int:
    """Run one peer until SIGTERM or SIGINT; returns the process exit status."""
    from twisted.internet import reactor

    run_on_monotonic_clock(reactor)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {config.name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # A block's RPC frame is built in a buffer that grows by doubling: up to twice the block.
    if not keep_buffers_in_heap(2 * config.block_size):
        log.info("no mallopt in this C library: block buffers use the default allocator")
    try:
        node = Node(config, reactor)
    except (DataDirLocked, WireError, OSError, ValueError) as e:
        print(f"qfs peer: error: {e}", file=sys.stderr)
        return 1
    if node.tls is None:
        log.warning(INSECURE_WARNING)
    status = {"code": 0, "started": False}

    def start() -> None:
        prepared = defer.ensureDeferred(node.prepare())
        prepared.addCallbacks(lambda _: start_services(), prepare_failed)

    def prepare_failed(failure: Any) -> None:
        print(f"qfs peer: error: cannot check the stored data: {failure.value}", file=sys.stderr)
        status["code"] = 1
        reactor.stop()

    def start_services() -> None:
        try:
            node.startService()
        except Exception as e:  # a port in use, typically
            print(f"qfs peer: error: cannot start: {e}", file=sys.stderr)
            status["code"] = 1
            reactor.stop()
            return
        status["started"] = True
        log.info(
            "peer %s (%s) up: gossip/rpc %s:%d, http %s:%d",
            config.name,
            node.node_id,
            config.bind,
            config.port,
            config.http_bind,
            config.http,
        )

    def stop() -> defer.Deferred[Any] | None:
        return node.stopService() if status["started"] else None

    gc.freeze()  # start-up's objects live for good: keep them out of every full collection
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(reactor.stop))
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(node.reload_tls))
    reactor.run(installSignalHandlers=False)
    return int(status["code"])
