"""A real network on one machine: every peer in a network namespace of its own, on a bridge.

Layout of one run (names share the prefix ``qfschaos-<pid>-<random>``, so leftovers of a run
that died can be told from a live run and swept safely):

    <prefix>-br      the bridge's namespace: bridge ``br0`` and one veth end ``v-<host>`` per host
    <prefix>-<host>  one per host (each peer, and ``client`` for the workload): ``eth0``, ``lo``

Addresses come from 10.213.0.0/24, which exists only inside these namespaces: no default route,
no link into the root namespace, nothing routed anywhere else. The test process reaches the
peers by moving one thread into the ``client`` namespace (`Network.inside`): a thread's network
namespace is its own (setns(2)), sockets keep the namespace they were made in, and threads and
child processes it starts inherit it.

Faults are nftables rules in each receiver's ``input`` chain (drop a share of the packets from
an address: 100 blocks it; dropped on arrival, so the sender sees no error, as on a real
network) and links taken down on the bridge. `Network.close` (also run by atexit
and on the way out of ``with``) kills what still runs in the run's namespaces and removes them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from peer.client import launcher
from peer.client.launcher import PeerProcess
from tests.support import LocalCluster

RUN_PREFIX = "qfschaos"
SUBNET = "10.213.0"
CLIENT = "client"
PORT, HTTP = 7000, 8000  # every peer has an address of its own, so one pair of ports for all
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"{RUN_PREFIX}-(\d+)-[0-9a-f]+-\S+")
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@functools.cache
def available() -> bool:
    """Whether namespaces can be made here: root, `ip` and `nft` present, and a probe works."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        return False
    try:
        with Network() as net:
            net.add_host("probe")
        return True
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return False


def namespaces() -> list[str]:
    """Every chaos namespace on this machine (this run's and any other's)."""
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    return [n for n in names if n.startswith(RUN_PREFIX + "-")]


def sweep() -> list[str]:
    """Remove the namespaces of runs whose process is gone; the names removed."""
    removed = []
    for name in namespaces():
        match = _NAME.fullmatch(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _remove_namespace(name)
            removed.append(name)
    return removed


def _remove_namespace(name: str) -> None:
    """Kill what runs inside `name` (only ever our peers: the namespace is this suite's), then
    delete it."""
    for pid in _ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


class Network:
    """One run's namespaces, links and nftables rules; a context manager that removes them."""

    def __init__(self) -> None:
        self.prefix = f"{RUN_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.hosts: dict[str, str] = {}  # host -> address
        self.drops: dict[tuple[str, str], int] = {}  # (sender, receiver) -> percent dropped
        self.down: set[str] = set()  # hosts whose link is down
        self._created: list[str] = []
        self._closed = False

    def __enter__(self) -> Network:
        sweep()
        atexit.register(self.close)
        try:
            self._add_namespace(self.ns("br"))
            _ip("-n", self.ns("br"), "link", "add", "br0", "type", "bridge")
            _ip("-n", self.ns("br"), "link", "set", "br0", "up")
            self.add_host(CLIENT)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, host: str) -> str:
        """The namespace name of `host` (or of the bridge, "br")."""
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        """The address of `host`."""
        return self.hosts[host]

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, host: str) -> str:
        """A namespace for `host` with a veth to the bridge and the next free address; returns
        the address. Its nftables table is made empty, ready for faults."""
        if not re.fullmatch(r"[a-z0-9]{1,10}", host) or host == "br" or host in self.hosts:
            raise ValueError(f"host name {host!r} is taken or not 1-10 lowercase letters/digits")
        address = f"{SUBNET}.{1 if host == CLIENT else 10 + len(self.hosts)}"
        ns, veth = self.ns(host), f"v-{host}"
        self._add_namespace(ns)
        _ip(
            "link",
            "add",
            "eth0",
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            veth,
            "netns",
            self.ns("br"),
        )
        _ip("-n", self.ns("br"), "link", "set", veth, "master", "br0")
        _ip("-n", self.ns("br"), "link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self._nft(
            host,
            "add table inet chaos\n"
            "add chain inet chaos in { type filter hook input priority 0 ; }\n",
        )
        self.hosts[host] = address
        return address

    def exec_argv(self, host: str) -> list[str]:
        """The command prefix that runs a program inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    @contextlib.contextmanager
    def inside(self, host: str = CLIENT) -> Iterator[None]:
        """Run the calling thread (and the threads and processes it starts) in `host`'s
        namespace until the block ends."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)
            os.close(target)

    # Faults.
    def drop(self, sender: str, receiver: str, percent: int = 100) -> None:
        """Drop `percent` of the packets `sender` sends to `receiver` (100: all of them)."""
        if not 0 < percent <= 100:
            raise ValueError(f"percent {percent} must be 1-100")
        self.drops[(sender, receiver)] = percent
        self._render(receiver)

    def partition(self, *groups: list[str]) -> None:
        """No packet crosses between any two of `groups`, either way."""
        changed: set[str] = set()
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        self.drops[(a, b)] = self.drops[(b, a)] = 100
                        changed |= {a, b}
        for host in changed:
            self._render(host)

    def link(self, host: str, up: bool) -> None:
        """Take `host`'s link to the bridge down, or up again: then wait for both ends' carrier
        and forget the failed address resolutions of the outage (the first packets after it
        would be lost otherwise)."""
        _ip("-n", self.ns("br"), "link", "set", f"v-{host}", "up" if up else "down")
        (self.down.discard if up else self.down.add)(host)
        if not up:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ends = _ip("-n", self.ns("br"), "link", "show", f"v-{host}")
            ends += _ip("-n", self.ns(host), "link", "show", "eth0")
            if ends.count("LOWER_UP") == 2:
                break
            time.sleep(0.01)
        for other in self.hosts:
            _ip("-n", self.ns(other), "neigh", "flush", "all", check=False)

    def heal(self) -> None:
        """Every rule dropped, every link up."""
        receivers = {b for _, b in self.drops}
        self.drops.clear()
        for host in receivers:
            self._render(host)
        for host in sorted(self.down):
            self.link(host, True)

    def _render(self, host: str) -> None:
        """Write `host`'s input chain: what it drops from whom."""
        lines = ["flush chain inet chaos in"]
        for (sender, receiver), percent in sorted(self.drops.items()):
            if receiver != host:
                continue
            sample = "" if percent == 100 else f"numgen random mod 100 < {percent} "
            lines.append(f"add rule inet chaos in ip saddr {self.hosts[sender]} {sample}drop")
        self._nft(host, "\n".join(lines) + "\n")

    def _nft(self, host: str, script: str) -> None:
        _ip("netns", "exec", self.ns(host), "nft", "-f", "-", stdin=script)

    def close(self) -> None:
        """Kill what still runs in this run's namespaces and remove them all (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for name in reversed(self._created):
            _remove_namespace(name)
        atexit.unregister(self.close)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class NetCluster(LocalCluster):
    """`size` peers, each in its own namespace of `network`, binding gossip, RPC and HTTP to
    its own address (as separate hosts would); the API is open (`--insecure`) on the test net.
    `wrap(name)` gives a command prefix run inside the namespace (e.g. a faked clock)."""

    def __init__(
        self,
        root: Path,
        network: Network,
        size: int,
        extra: list[str] | None = None,
        wrap: dict[str, list[str]] | None = None,
    ) -> None:
        self.root = root
        self.extra = list(extra or [])
        self.token = None
        self.tls_dir = None
        self.ca = None
        self.network = network
        self.wrap = wrap or {}
        self.peers: list[PeerProcess] = []
        self.ports: dict[str, tuple[int, int]] = {}
        names = [f"p{i + 1}" for i in range(size)]
        for name in names:
            network.add_host(name)
            self.ports[name] = (PORT, HTTP)
        for name in names:
            self.peers.append(self._process(name))

    def _process(self, name: str, extra: list[str] | None = None) -> PeerProcess:
        address = self.network.address(name)
        argv = [
            *self.network.exec_argv(name),
            *self.wrap.get(name, []),
            *launcher.peer_argv(name, self.root / name, PORT, HTTP, extra=self.extra),
            "--bind",
            address,
            "--http-bind",
            address,
        ]  # peer_argv makes it an open (--insecure) peer, as --http-bind off loopback needs
        for other in self.ports:
            if other != name:
                argv += ["--join", f"{self.network.address(other)}:{PORT}"]
        return PeerProcess(name, argv + (extra or []), f"http://{address}:{HTTP}")
