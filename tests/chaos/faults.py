"""Fault injection on a cluster: processes (SIGKILL / SIGTERM and restart, SIGSTOP and
SIGCONT), the network (partitions, one-way and random loss, links down: `tests.chaos.netns`),
clocks and disks (`tests.chaos.hostfaults`), and membership (peers joining, leaving for good,
coming back with a wiped data directory).

`Faults` does every signal by PID through the cluster and remembers which peers it took down,
froze or removed from the cluster, so it can tell a peer that exited on its own (a violation)
from one it killed, and can heal everything at the end. Every fault is logged in `injected`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable

import httpx

from peer.client import launcher
from tests.chaos.hostfaults import FakeClock, SmallDisk
from tests.chaos.netns import Network
from tests.support import LocalCluster

RESTART_TIMEOUT = 30.0
HEAL_TIMEOUT = 60.0
PORT_TAKEN = "Address already in use"


class Faults:
    """Signals peers of `cluster` and keeps track of what it did to them."""

    def __init__(
        self,
        cluster: LocalCluster,
        network: Network | None = None,
        clocks: dict[str, FakeClock] | None = None,
        disks: dict[str, SmallDisk] | None = None,
        absent: Iterable[str] = (),
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.clocks = clocks or {}
        self.disks = disks or {}
        self.absent = set(absent)  # declared peers that are not members now (spares, leavers)
        self.down: set[str] = set()
        self.frozen: set[str] = set()
        self.injected: list[dict[str, object]] = []
        self.violations: list[dict[str, object]] = []
        self._lock = threading.RLock()
        self._started = time.monotonic()

    @property
    def names(self) -> list[str]:
        """Every member's name, in order (spares and peers that left are not members)."""
        return [p.name for p in self.cluster.peers if p.name not in self.absent]

    def serving(self) -> list[str]:
        """Peers neither killed nor frozen."""
        return [n for n in self.names if n not in self.down and n not in self.frozen]

    def record(self, kind: str, targets: list[str], **detail: object) -> None:
        """Log one injected fault."""
        at = round(time.monotonic() - self._started, 2)
        self.injected.append({"at": at, "fault": kind, "peers": targets, **detail})

    def kill(self, targets: list[str], signum: int = signal.SIGKILL) -> None:
        """Kill `targets` (SIGKILL, or SIGTERM for a graceful stop) and wait until they are gone;
        a peer still running 15 s after SIGTERM is a violation, and gets SIGKILL."""
        with self._lock:
            for name in targets:
                self.down.add(name)
                try:
                    self.cluster.kill(name, signum)
                except subprocess.TimeoutExpired:
                    self.violations.append(
                        {"violation": "peer did not exit on SIGTERM within 15 s", "peer": name}
                    )
                    self.cluster.kill(name, signal.SIGKILL)
            self.record("sigkill" if signum == signal.SIGKILL else "sigterm", targets)

    def freeze(self, targets: list[str]) -> None:
        """SIGSTOP `targets`: they keep their sockets but answer nothing."""
        with self._lock:
            for name in targets:
                self.frozen.add(name)
                self.cluster.kill(name, signal.SIGSTOP)
            self.record("sigstop", targets)

    def thaw(self, targets: list[str]) -> None:
        """SIGCONT frozen `targets`."""
        with self._lock:
            for name in targets:
                if name in self.frozen:
                    self.cluster.kill(name, signal.SIGCONT)
                    self.frozen.discard(name)

    def restart(self, targets: list[str], timeout: float = RESTART_TIMEOUT) -> None:
        """Start killed `targets` again with their data and wait until they serve HTTP."""
        with self._lock:
            for name in targets:
                self._launch(name)
        for name in targets:
            self._wait_healthy(name, timeout)
            self.down.discard(name)

    def _launch(self, name: str) -> None:
        peer = self.cluster.peer(name)
        if not peer.running():
            launcher.start(peer, log_dir=self.cluster.root / "logs")

    def _wait_healthy(self, name: str, timeout: float) -> None:
        """Wait for /healthz; a peer whose port a client connection took meanwhile (the OS
        hands out ephemeral ports from the same range) is started again a little later."""
        peer = self.cluster.peer(name)
        url = peer.http_url + "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not peer.running() and PORT_TAKEN in self.cluster.log(name)[-500:]:
                time.sleep(0.5)
                with self._lock:
                    self._launch(name)
            try:
                if httpx.get(url, timeout=2.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not serve /healthz within {timeout}s of its restart")

    def wait_converged(self, timeout: float = RESTART_TIMEOUT) -> None:
        """Wait until every serving peer sees every serving peer alive."""
        serving = [self.cluster.peer(n) for n in self.serving()]
        launcher.wait_converged(serving, timeout)

    def wait_dead(self, name: str, timeout: float = RESTART_TIMEOUT) -> None:
        """Wait until a serving peer's gossip declares the killed `name` dead."""
        observer = next(n for n in self.serving() if n != name)
        self.cluster.wait_state(observer, name, "dead", timeout)

    def check_alive(self) -> None:
        """Record a crash for every peer that exited though nobody killed it."""
        with self._lock:
            for peer in self.cluster.peers:
                if peer.name in self.down | self.absent or peer.process is None:
                    continue
                code = peer.process.poll()
                if code is not None:
                    self.down.add(peer.name)
                    self.violations.append(
                        {
                            "violation": "peer exited on its own",
                            "peer": peer.name,
                            "returncode": code,
                            "log_tail": self.cluster.log(peer.name)[-3000:],
                        }
                    )

    # The network (a cluster in namespaces only).
    def _net(self) -> Network:
        if self.network is None:
            raise RuntimeError("network faults need the namespace network (--netns)")
        return self.network

    def partition(self, *groups: list[str]) -> None:
        """No traffic between any two `groups` of peers (the client still reaches all)."""
        self._net().partition(*groups)
        self.record("partition", [n for g in groups for n in g], groups=[list(g) for g in groups])

    def one_way(self, sender: str, receiver: str, percent: int = 100) -> None:
        """`receiver` stops hearing `sender` (`percent` of its packets lost); the other way
        still works. (TCP needs both ways, so RPC fails both ways; gossip is UDP.)"""
        self._net().drop(sender, receiver, percent)
        self.record("one-way loss", [sender, receiver], percent=percent)

    def lossy(self, a: str, b: str, percent: int) -> None:
        """Lose `percent` of the packets on the link between `a` and `b`, both ways."""
        self._net().drop(a, b, percent)
        self._net().drop(b, a, percent)
        self.record("random loss", [a, b], percent=percent)

    def link(self, name: str, up: bool) -> None:
        """Take `name`'s network link down (clients cannot reach it either), or up again."""
        self._net().link(name, up)
        self.record("link up" if up else "link down", [name])

    def heal_network(self) -> None:
        """Every partition, loss and downed link ends."""
        if self.network is not None and (self.network.drops or self.network.down):
            self.network.heal()
            self.record("network healed", [])

    # Clocks and disks.
    def step_clock(self, name: str, seconds: float) -> None:
        """Set `name`'s wall clock `seconds` away from true time (libfaketime)."""
        self.clocks[name].set(seconds)
        self.record("clock step", [name], offset_s=seconds)

    def fill_disk(self, name: str) -> None:
        """Fill `name`'s data directory (a small tmpfs) to the last byte."""
        written = self.disks[name].fill()
        self.record("disk full", [name], ballast=written)

    def free_disk(self, name: str) -> None:
        """Give `name`'s disk its space back."""
        self.disks[name].free()
        self.record("disk freed", [name])

    # Membership.
    def join(self, name: str, timeout: float = RESTART_TIMEOUT) -> None:
        """Start a peer that is not a member (a spare, or one that left) and wait for it."""
        with self._lock:
            self.absent.discard(name)
            self.down.add(name)
            self.record("join", [name])
        self.restart([name], timeout)

    def leave(self, name: str) -> None:
        """SIGTERM `name` (a graceful leave) and keep it out of the cluster."""
        self.kill([name], signal.SIGTERM)
        with self._lock:
            self.absent.add(name)
            self.down.discard(name)
            self.record("leave", [name])

    def wipe(self, name: str) -> None:
        """Remove the data directory of a killed peer (a replaced disk: a new node id)."""
        if self.cluster.peer(name).running():
            raise RuntimeError(f"{name} is running: kill it before wiping its data")
        data = self.cluster.root / name
        for child in list(data.iterdir()) if data.exists() else []:
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        self.record("wipe", [name])

    def heal(self, timeout: float = HEAL_TIMEOUT) -> float:
        """End network faults, set clocks right, free disks, continue frozen peers, restart
        killed ones, wait for convergence; seconds taken."""
        started = time.monotonic()
        self.heal_network()
        for name, clock in self.clocks.items():
            if clock.offset:
                self.step_clock(name, 0)
        for name, disk in self.disks.items():
            if disk.full:
                self.free_disk(name)
        self.thaw(sorted(self.frozen))
        self.restart(sorted(self.down), timeout)
        self.wait_converged(max(1.0, timeout - (time.monotonic() - started)))
        return time.monotonic() - started

    def release(self) -> None:
        """SIGCONT every frozen peer (before the cluster is stopped, whatever happened)."""
        for peer in self.cluster.peers:
            if peer.running():
                peer.signal(signal.SIGCONT)
        self.frozen.clear()
