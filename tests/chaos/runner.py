"""Run one chaos scenario: cluster, workload and faults, then heal, observe and check.

Phases: start the cluster (on 127.0.0.1, or each peer in its own network namespace:
`tests.chaos.netns`); run the workers and the fault scheduler for `duration` seconds while
watching for peers that exit on their own (and, for a steady scenario, for peers declared
dead or whose background jobs stall); stop the faults and the workload; heal (end network
faults, set clocks right, free disks, SIGCONT the frozen, restart the killed, wait for gossip
to converge);
observe the final state (rule 4 of `tests.chaos.checker`: every member agrees on every key
with r=N, then with r=1, and every listing names the files, within `converge_timeout`); settle:
read every key through every member for the scenario's `settle` seconds (rule 5) and, for the
soak, until stored block bytes come down to what the live files need (rule 6); check the
history; stop the peers (SIGTERM must end each cleanly) and scan their logs (rule 7).
The summary is JSON-able; `violations` is empty when everything held, and each carries the
seed and the command that replays the run. The history (one JSON operation a line) goes to
`history.jsonl` beside the peers' logs, and a failed run's violations to `violations.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from peer.client import launcher
from peer.client.api_client import Client, Conflict, QfsError
from peer.client.launcher import PeerProcess
from peer.manifest import INLINE_MAX
from tests.chaos import hostfaults, netns
from tests.chaos.checker import check, check_logs, check_space
from tests.chaos.faults import HEAL_TIMEOUT, PORT_TAKEN, Faults
from tests.chaos.history import ABSENT, OK, History, digest
from tests.chaos.hostfaults import FakeClock, SmallDisk
from tests.chaos.hostile import Burst
from tests.chaos.netns import NetCluster, Network
from tests.chaos.scenarios import SCENARIOS, Chaos, N, Scenario
from tests.chaos.workload import BIG_OP_TIMEOUT, OP_TIMEOUT, Worker
from tests.support import LocalCluster

CONVERGE_TIMEOUT = 30.0
START_TIMEOUT = 60.0
RECLAIM_TIMEOUT = 60.0  # seconds the soak waits, quiet, for space to come back
# Seconds without an anti-entropy round (one a second) that is a stall: more than a round
# waiting out a 10 s RPC timeout takes.
STALL_AFTER = 12.0


class Unsupported(RuntimeError):
    """The scenario needs what this machine lacks (namespaces, libfaketime, tmpfs)."""


def missing(scenario: Scenario, use_netns: bool) -> str | None:
    """What `scenario` needs and cannot have here, or None."""
    if scenario.netns and not use_netns:
        return "the namespace network (root, ip, nft)"
    if scenario.clocks and not hostfaults.clock_available():
        return f"libfaketime ({hostfaults.LIBFAKETIME})"
    if scenario.disk and not hostfaults.disk_available():
        return "tmpfs mounts (root)"
    if scenario.loopback and use_netns:
        return "loopback"
    return None


def default_netns(scenario: Scenario) -> bool:
    """Whether `scenario` runs on the namespace network unless told: where it can."""
    return not scenario.loopback and netns.available()


def run(
    scenario: Scenario | str,
    seed: int,
    duration: float,
    root: Path,
    converge_timeout: float = CONVERGE_TIMEOUT,
    exclusive: bool = False,
    use_netns: bool | None = None,
) -> dict[str, Any]:
    """Run `scenario` with `seed` for `duration` seconds under `root`; the JSON summary.

    `exclusive` gives each worker keys of its own, so writes to one key never overlap and the
    checker's real-time rule pins every key's final state to its last acknowledged write.
    `use_netns` puts every peer in a network namespace of its own (default: `default_netns`);
    Unsupported when the scenario needs what is missing here.
    """
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    if use_netns is None:
        use_netns = default_netns(scenario)
    lacking = missing(scenario, use_netns)
    if lacking:
        raise Unsupported(f"scenario {scenario.name} needs {lacking}")
    with contextlib.ExitStack() as stack:
        network = None
        if use_netns:
            network = stack.enter_context(Network())
            stack.enter_context(network.inside())  # this thread and all it starts
        summary = _run(scenario, seed, duration, root, converge_timeout, exclusive, network)
    summary["network"] = "netns" if use_netns else "loopback"
    return summary


def _run(
    scenario: Scenario,
    seed: int,
    duration: float,
    root: Path,
    converge_timeout: float,
    exclusive: bool,
    network: Network | None,
) -> dict[str, Any]:
    """The run proper, in `network` if given: load and faults, heal, observe, settle, check."""
    extra = list(scenario.extra)
    cluster_key: bytes | None = None
    if scenario.cluster_key:
        cluster_key = random.Random(f"{seed}:key").randbytes(32).hex().encode()
        root.mkdir(parents=True, exist_ok=True)
        (root / "cluster.key").write_bytes(cluster_key)
        (root / "cluster.key").chmod(0o600)  # a key others may read is refused
        extra += ["--cluster-key-file", str(root / "cluster.key")]
    started = time.monotonic()
    names = [f"p{i + 1}" for i in range(scenario.peers + scenario.spares)]
    clocks = {n: FakeClock(root / "clocks" / n) for n in names[: scenario.clocks]}
    with _cluster(root, scenario, extra, network, clocks) as (cluster, disks):
        faults = Faults(cluster, network, clocks, disks, absent=names[scenario.peers :])
        history = History()
        keys = [f"/chaos/d{i % 3}/k{i:02d}" for i in range(scenario.keys)]
        try:
            workers = _workers(scenario, seed, cluster, keys, history, exclusive)
            burst = Burst(random.Random(f"{seed}:hostile"), cluster_key, keys)
            chaos = Chaos(faults, random.Random(seed), workers, burst, cluster.ports)
            scheduler = _Scheduler(scenario, chaos)
            watch = _SteadyWatch(faults) if scenario.steady else None
            for thread in [*workers, scheduler, *([watch] if watch else [])]:
                thread.start()
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline and scheduler.is_alive():
                faults.check_alive()
                time.sleep(0.2)
            scheduler.stop.set()
            scheduler.join(120)
            for worker in workers:
                worker.stop_event.set()
            for worker in workers:
                worker.join(BIG_OP_TIMEOUT + 10)
            faults.check_alive()
            if watch is not None:
                watch.stop.set()
                watch.join(10)
            try:
                heal_seconds = faults.heal()
            except TimeoutError as e:  # reported with the rest, not a crash of the run
                heal_seconds = HEAL_TIMEOUT
                faults.violations.append(
                    {"violation": "cluster did not converge after healing", "detail": str(e)}
                )
            members = [cluster.peer(n) for n in faults.names]
            final, converged, converge_seconds = observe(members, keys, converge_timeout)
            settled_at = time.monotonic()
            space = settle(scenario, seed, members, keys, history, final, cluster)
            violations: list[dict[str, Any]] = list(faults.violations)
            violations += watch.violations if watch else []
            violations += scheduler.errors
            violations += history.problems
            violations += burst.failures
            violations += [
                {
                    "violation": "workload thread crashed",
                    "worker": w.client_name,
                    "error": repr(w.crash),
                }
                for w in workers
                if w.crash is not None
            ]
            violations += converged
            violations += check(history.ops, final, settled_at)
            violations += space.pop("violations")
            cluster.stop()
            violations += _unclean_exits(cluster, faults)
            violations += check_logs({p.name: cluster.log(p.name) for p in cluster.peers})
            replay = (
                f"python -m tests.chaos --scenario {scenario.name} --seed {seed} "
                f"--duration {duration:g}" + (" --exclusive-keys" if exclusive else "")
            )
            for violation in violations:
                violation.update(seed=seed, replay=replay)
            with open(cluster.root / "history.jsonl", "w") as out:  # for the post-mortem
                out.writelines(json.dumps(op.summary()) + "\n" for op in history.ops)
            if violations:
                (cluster.root / "violations.json").write_text(json.dumps(violations, default=str))
            info = {
                "scenario": scenario.name,
                "seed": seed,
                "exclusive_keys": exclusive,
                "duration_s": duration,
                "elapsed_s": round(time.monotonic() - started, 1),
                "heal_s": round(heal_seconds, 1),
                "converge_s": round(converge_seconds, 1),
                "settle_s": round(time.monotonic() - settled_at, 1),
                "members": faults.names,
                **space,
                "replay": replay,
            }
            return _summary(info, history, faults, burst, violations, final, cluster)
        finally:
            faults.release()
            cluster.stop()


@contextlib.contextmanager
def _cluster(
    root: Path,
    scenario: Scenario,
    extra: list[str],
    network: Network | None,
    clocks: dict[str, FakeClock],
) -> Iterator[tuple[LocalCluster, dict[str, SmallDisk]]]:
    """A started cluster and its disks; on the way out its peers are stopped and its disks
    unmounted, whatever happened (also when it failed to start)."""
    disks: dict[str, SmallDisk] = {}
    cluster = None
    try:
        cluster = start_cluster(root, scenario, extra, network, clocks, disks)
        yield cluster, disks
    finally:
        if cluster is not None:
            cluster.stop()
        for disk in disks.values():
            disk.unmount()


def start_cluster(
    root: Path,
    scenario: Scenario,
    extra: list[str],
    network: Network | None = None,
    clocks: dict[str, FakeClock] | None = None,
    disks: dict[str, SmallDisk] | None = None,
    attempts: int = 3,
) -> LocalCluster:
    """The scenario's cluster under `root`, its first `scenario.peers` peers started (the
    spares are declared, not started): on 127.0.0.1, started again on fresh ports when another
    process took one of the ports picked (free_port cannot reserve them), or in `network`.
    Peers with a clock in `clocks` run on it; with `scenario.disk`, every peer's data
    directory is a tmpfs, recorded in `disks` (the caller unmounts them)."""
    clocks = clocks or {}
    disks = {} if disks is None else disks
    size = scenario.peers + scenario.spares
    for attempt in range(attempts):
        cluster_root = root / f"cluster{attempt}"
        wrap = {name: clock.env() for name, clock in clocks.items()}
        if network is not None:
            cluster: LocalCluster = NetCluster(cluster_root, network, size, extra, wrap)
        else:
            cluster = LocalCluster(cluster_root, size, extra)
            for peer in cluster.peers:
                peer.argv = wrap.get(peer.name, []) + peer.argv
        for peer in cluster.peers if scenario.disk else []:
            disks[peer.name] = disk = SmallDisk(cluster_root / peer.name, scenario.disk)
            disk.mount()
        members = cluster.peers[: scenario.peers]
        try:
            for peer in members:
                launcher.start(peer, log_dir=cluster_root / "logs")
            launcher.wait_converged(members, START_TIMEOUT)
            return cluster
        except (RuntimeError, TimeoutError):
            cluster.stop()
            for disk in disks.values():
                disk.unmount()
            taken = any(PORT_TAKEN in cluster.log(p.name) for p in cluster.peers)
            if network is not None or not taken or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _workers(
    scenario: Scenario,
    seed: int,
    cluster: LocalCluster,
    keys: list[str],
    history: History,
    exclusive: bool,
) -> list[Worker]:
    urls = {p.name: p.http_url for p in cluster.peers}
    stop = threading.Event()
    names = [f"w{i}" for i in range(scenario.workers)]
    names += [f"big{i}" for i in range(scenario.big_uploaders)]
    return [
        Worker(
            name,
            urls,
            keys[i :: len(names)] if exclusive else keys,
            history,
            stop,
            f"{seed}:{name}",
            big=name.startswith("big"),
            mix=scenario.mix,
        )
        for i, name in enumerate(names)
    ]


class _Scheduler(threading.Thread):
    """Runs the scenario's fault rounds, with seeded pauses, until `stop` is set."""

    def __init__(self, scenario: Scenario, chaos: Chaos) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.scenario = scenario
        self.chaos = chaos
        self.stop = threading.Event()
        self.errors: list[dict[str, Any]] = []

    def run(self) -> None:
        low, high = self.scenario.pause
        try:
            while not self.stop.wait(self.chaos.rng.uniform(low, high)):
                self.scenario.step(self.chaos)
        except Exception as e:  # a peer that would not come back, typically
            self.errors.append(
                {
                    "violation": "fault round failed",
                    "error": repr(e),
                    "faults_so_far": self.chaos.faults.injected[-8:],
                }
            )


class _SteadyWatch(threading.Thread):
    """Polls every serving member's /v1/cluster, for scenarios whose faults never justify a
    death or a stall (clock steps): a serving member seen dead, or a serving member whose
    anti-entropy timer did not fire for STALL_AFTER seconds (its timers stopped), is a
    violation. Timer ticks, not finished rounds: on a loaded machine one exchange with a slow
    peer may take longer than that, and says nothing about the clock."""

    def __init__(self, faults: Faults, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="chaos-steadywatch", daemon=True)
        self.faults = faults
        self._clock = clock
        self.stop = threading.Event()
        self.violations: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self._progress: dict[str, tuple[int, float]] = {}  # peer -> (ticks, since)

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self.stop.wait(0.5):
                serving = set(self.faults.serving())
                for name in sorted(serving):
                    url = self.faults.cluster.peer(name).http_url + "/v1/cluster"
                    try:
                        body = http.get(url).json()
                        members, ticks = body["members"], body["repair"]["anti_entropy_ticks"]
                    except (httpx.HTTPError, ValueError, KeyError):
                        continue
                    for member in members:
                        if member["state"] == "dead" and member["name"] in serving:
                            self._report(
                                "serving peer declared dead",
                                (name, member["name"]),
                                observer=name,
                                peer=member["name"],
                            )
                    self._stalled(name, ticks)

    def _stalled(self, name: str, ticks: int) -> None:
        now = self._clock()
        last, since = self._progress.get(name, (-1, now))
        if ticks != last:
            self._progress[name] = (ticks, now)
        elif now - since > STALL_AFTER:
            self._report(
                "background jobs stalled",
                (name, "stall"),
                peer=name,
                anti_entropy_ticks=ticks,
                for_s=round(now - since, 1),
            )

    def _report(self, what: str, once: tuple[str, str], **detail: object) -> None:
        if once in self._seen:
            return
        self._seen.add(once)
        clocks = {n: c.offset for n, c in self.faults.clocks.items() if c.offset}
        self.violations.append(
            {
                "violation": what,
                **detail,
                "clock_offsets_s": clocks,
                "faults_so_far": self.faults.injected[-5:],
            }
        )


def settle(
    scenario: Scenario,
    seed: int,
    members: list[PeerProcess],
    keys: list[str],
    history: History,
    final: dict[str, frozenset[str]],
    cluster: LocalCluster,
) -> dict[str, Any]:
    """Read every key through every member for `scenario.settle` seconds (the reads go into
    `history` for rule 5) and, for a scenario that checks space, until the stored block bytes
    come down to what the live files need or RECLAIM_TIMEOUT passes (rule 6). The space
    figures, and under "violations" what rule 6 found."""
    urls = {p.name: p.http_url for p in members}
    reader = Worker("settle", urls, keys, history, threading.Event(), f"{seed}:settle")
    live = _live_bytes(history, final)
    started = time.monotonic()
    space: list[dict[str, Any]] = []
    try:
        while True:
            for key in keys:
                for name in urls:
                    reader.get(name, key)
            elapsed = time.monotonic() - started
            if elapsed < scenario.settle:
                continue
            if not scenario.check_space:
                return {"violations": []}
            stored = {p.name: block_bytes(cluster.root / p.name) for p in members}
            space = check_space(stored, live, min(N, len(members)))
            if not space or elapsed > scenario.settle + RECLAIM_TIMEOUT:
                for violation in space:
                    violation["collectors"] = _collectors(cluster, members)
                return {
                    "live_bytes": live,
                    "stored_block_bytes": stored,
                    "reclaim_s": round(elapsed, 1),
                    "violations": space,
                }
            time.sleep(1.0)
    finally:
        for client in reader.clients.values():
            client.close()


GC_FIELDS = ("gc_rounds", "gc_last_skip", "gc_generation", "known_peers_away", "rejoin")


def _collectors(cluster: LocalCluster, members: list[PeerProcess]) -> dict[str, Any]:
    """What each member's garbage collector says it did and why it waits (for the post-mortem
    of a space violation)."""
    seen: dict[str, Any] = {}
    for peer in members:
        try:
            with cluster.client(peer.name) as client:
                repair = client.cluster()["repair"]
        except (QfsError, OSError) as e:
            seen[peer.name] = repr(e)
        else:
            seen[peer.name] = {field: repair.get(field) for field in GC_FIELDS}
    return seen


def block_bytes(data: Path) -> int:
    """The bytes of the blocks stored in the data directory `data`."""
    total = 0
    for path in (data / "blocks").rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _live_bytes(history: History, final: dict[str, frozenset[str]]) -> int:
    """The bytes of block data the final files need: each final value stored in blocks (not
    inline in its manifest) once."""
    sizes = {op.value: op.size for op in history.ops if op.kind == "put" and op.value}
    values = {v for seen in final.values() for v in seen if v in sizes}
    return sum(sizes[v] for v in values if sizes[v] > INLINE_MAX)


def observe(
    members: list[PeerProcess], keys: list[str], timeout: float
) -> tuple[dict[str, frozenset[str]], list[dict[str, Any]], float]:
    """Every key's final observation once all `members` agree (r=N, then r=1) and every
    listing matches; the observations, convergence violations, and the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    r_all = min(N, len(members))
    clients = {p.name: Client(p.http_url, timeout=OP_TIMEOUT) for p in members}
    violations: list[dict[str, Any]] = []
    try:
        views: dict[str, dict[str, frozenset[str] | None]] = {}
        for r in (r_all, 1):
            while True:
                views = {
                    name: {key: _look(client, key, r) for key in keys}
                    for name, client in clients.items()
                }
                disagreeing = [k for k in keys if len({v[k] for v in views.values()}) != 1]
                unknown = [k for k in keys if any(v[k] is None for v in views.values())]
                if not disagreeing and not unknown:
                    break
                if time.monotonic() > deadline:
                    violations.append(
                        {
                            "violation": f"replicas did not converge (r={r})",
                            "within_s": timeout,
                            "keys": {
                                k: {n: sorted(v[k] or ["<error>"]) for n, v in views.items()}
                                for k in sorted(set(disagreeing) | set(unknown))
                            },
                        }
                    )
                    break
                time.sleep(0.5)
        first = next(iter(clients.values()))
        final = {}  # a key no peer could read is reported above and not checked further
        for key in keys:
            seen = next((v[key] for v in views.values() if v[key] is not None), None)
            if seen is not None:
                final[key] = seen
        violations += _verify_siblings(first, final)
        violations += _check_listings(clients, final, deadline)
    finally:
        for client in clients.values():
            client.close()
    return final, violations, time.monotonic() - started


def _check_listings(
    clients: dict[str, Client], final: dict[str, frozenset[str]], deadline: float
) -> list[dict[str, Any]]:
    """Every peer's listing of each directory names exactly the keys that hold a file."""
    directories: dict[str, set[str]] = {}
    for key, seen in final.items():
        directory, _, name = key.rpartition("/")
        names = directories.setdefault(directory, set())
        if seen != {ABSENT}:
            names.add(name)
    while True:
        wrong = {}
        for directory, expected in sorted(directories.items()):
            for peer, client in clients.items():
                try:
                    listed = {e["name"] for e in client.ls(directory)}
                except QfsError as e:
                    listed = set() if e.status == 404 else {f"<{e}>"}
                if listed != expected:
                    wrong[f"{peer}:{directory}"] = {
                        "listed_not_files": sorted(listed - expected),
                        "files_not_listed": sorted(expected - listed),
                    }
        if not wrong:
            return []
        if time.monotonic() > deadline:
            return [{"violation": "directory listing disagrees with the files", "at": wrong}]
        time.sleep(0.5)


def _look(client: Client, key: str, r: int) -> frozenset[str] | None:
    """What one read of `key` with quorum `r` returns: digests, {ABSENT}, or None on failure."""
    try:
        return frozenset([digest(client.get_bytes(key, r=r))])
    except Conflict as conflict:
        return frozenset(s["blake3"] for s in conflict.siblings)
    except QfsError as e:
        return frozenset([ABSENT]) if e.status == 404 else None


def _verify_siblings(client: Client, final: dict[str, frozenset[str]]) -> list[dict[str, Any]]:
    """Read each final sibling's bytes by its version; they must hash to what was listed."""
    problems: list[dict[str, Any]] = []
    for key, seen in final.items():
        if len(seen) < 2:
            continue
        try:
            client.get_bytes(key)
        except Conflict as conflict:
            for sibling in conflict.siblings:
                try:
                    data = client.get_bytes(key, version=sibling["version"])
                except QfsError as e:
                    problems.append(
                        {"violation": "sibling unreadable", "key": key, "error": str(e)}
                    )
                    continue
                if digest(data) != sibling["blake3"]:
                    problems.append({"violation": "sibling bytes differ", "key": key})
        except QfsError as e:
            problems.append({"violation": "final read failed", "key": key, "error": str(e)})
    return problems


def _unclean_exits(cluster: LocalCluster, faults: Faults) -> list[dict[str, Any]]:
    """Peers that did not end with status 0 on the final SIGTERM."""
    return [
        {
            "violation": "peer did not exit cleanly on SIGTERM",
            "peer": p.name,
            "returncode": p.process.returncode,
        }
        for p in cluster.peers
        if p.process is not None
        and p.name not in faults.down
        and p.process.returncode not in (0, -signal.SIGTERM)
    ]


def _summary(
    info: dict[str, Any],
    history: History,
    faults: Faults,
    burst: Burst,
    violations: list[dict[str, Any]],
    final: dict[str, frozenset[str]],
    cluster: LocalCluster,
) -> dict[str, Any]:
    """The JSON summary of a run: `info`, then counts, then the violations."""
    ops = history.ops
    outcomes = Counter(f"{op.kind}:{op.outcome}" for op in ops)
    tracebacks = {p.name: len(re.findall("Traceback", cluster.log(p.name))) for p in cluster.peers}
    return {
        **info,
        "peers": len(cluster.peers),
        "operations": len(ops),
        "acknowledged": sum(1 for op in ops if op.kind != "get" and op.outcome == OK),
        "acknowledged_big": sum(
            1 for op in ops if op.kind == "put" and op.outcome == OK and op.size > 1 << 20
        ),
        "outcomes": dict(sorted(outcomes.items())),
        "faults": len(faults.injected),
        "fault_kinds": dict(Counter(str(f["fault"]) for f in faults.injected)),
        "hostile_messages": burst.sent,
        "final_keys": {
            "absent": sum(1 for v in final.values() if v == {ABSENT}),
            "single": sum(1 for v in final.values() if len(v) == 1 and ABSENT not in v),
            "siblings": sum(1 for v in final.values() if len(v) > 1),
        },
        "log_tracebacks": tracebacks,
        "violation_counts": dict(Counter(str(v["violation"]) for v in violations)),
        "violations": violations,
        "root": os.fspath(cluster.root),
    }
