"""Fault injection on a LocalCluster: SIGKILL / SIGTERM and restart, SIGSTOP and SIGCONT.

`Faults` does every signal by PID through the cluster and remembers which peers it took down
or froze, so it can tell a peer that exited on its own (a violation) from one it killed, and
can heal everything at the end. Every fault is logged in `injected`.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx

from peer.client import launcher
from tests.support import LocalCluster

RESTART_TIMEOUT = 30.0
HEAL_TIMEOUT = 60.0
PORT_TAKEN = "Address already in use"


class Faults:
    """Signals peers of `cluster` and keeps track of what it did to them."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.down: set[str] = set()
        self.frozen: set[str] = set()
        self.injected: list[dict[str, object]] = []
        self.violations: list[dict[str, object]] = []
        self._lock = threading.RLock()
        self._started = time.monotonic()

    @property
    def names(self) -> list[str]:
        """Every peer's name, in order."""
        return [p.name for p in self.cluster.peers]

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

    def check_alive(self) -> None:
        """Record a crash for every peer that exited though nobody killed it."""
        with self._lock:
            for peer in self.cluster.peers:
                if peer.name in self.down or peer.process is None:
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

    def heal(self, timeout: float = HEAL_TIMEOUT) -> float:
        """Continue frozen peers, restart killed ones, wait for convergence; seconds taken."""
        started = time.monotonic()
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
