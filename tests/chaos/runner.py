"""Run one chaos scenario: cluster, workload and faults, then heal, observe and check.

Phases: start a LocalCluster; run the workers and the fault scheduler for `duration` seconds
while watching for peers that exit on their own; stop the faults and the workload; heal (SIGCONT
the frozen, restart the killed, wait for gossip to converge); observe the final state (rule 4
of `tests.chaos.checker`: every peer agrees on every key with r=N, then with r=1, and every
listing names the files, within `converge_timeout`); check the history; stop the peers
(SIGTERM must end each cleanly).
The summary is JSON-able; `violations` is empty when everything held. A failed run leaves the
history (one JSON operation a line) in `history.jsonl` and its violations in `violations.json`
beside the peers' logs.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from peer.client.api_client import Client, Conflict, QfsError
from tests.chaos.checker import check
from tests.chaos.faults import PORT_TAKEN, Faults
from tests.chaos.history import ABSENT, OK, History, digest
from tests.chaos.hostile import Burst
from tests.chaos.scenarios import SCENARIOS, Chaos, N, Scenario
from tests.chaos.workload import BIG_OP_TIMEOUT, OP_TIMEOUT, Worker
from tests.support import LocalCluster

CONVERGE_TIMEOUT = 30.0
START_TIMEOUT = 60.0


def run(
    scenario: Scenario | str,
    seed: int,
    duration: float,
    root: Path,
    converge_timeout: float = CONVERGE_TIMEOUT,
    exclusive: bool = False,
) -> dict[str, Any]:
    """Run `scenario` with `seed` for `duration` seconds under `root`; the JSON summary.

    `exclusive` gives each worker keys of its own, so writes to one key never overlap and the
    checker's real-time rule pins every key's final state to its last acknowledged write.
    """
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    extra = list(scenario.extra)
    cluster_key: bytes | None = None
    if scenario.cluster_key:
        cluster_key = random.Random(f"{seed}:key").randbytes(32).hex().encode()
        root.mkdir(parents=True, exist_ok=True)
        (root / "cluster.key").write_bytes(cluster_key)
        (root / "cluster.key").chmod(0o600)  # a key others may read is refused
        extra += ["--cluster-key-file", str(root / "cluster.key")]
    started = time.monotonic()
    cluster = start_cluster(root, scenario.peers, extra)
    faults = Faults(cluster)
    history = History()
    keys = [f"/chaos/d{i % 3}/k{i:02d}" for i in range(scenario.keys)]
    try:
        workers = _workers(scenario, seed, cluster, keys, history, exclusive)
        burst = Burst(random.Random(f"{seed}:hostile"), cluster_key, keys)
        chaos = Chaos(faults, random.Random(seed), workers, burst, cluster.ports)
        scheduler = _Scheduler(scenario, chaos)
        for thread in [*workers, scheduler]:
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
        heal_seconds = faults.heal()
        final, converged, converge_seconds = observe(cluster, keys, converge_timeout)
        violations: list[dict[str, Any]] = list(faults.violations)
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
        violations += check(history.ops, final)
        cluster.stop()
        violations += _unclean_exits(cluster, faults)
        if violations:  # for the post-mortem, beside the peers' logs
            with open(cluster.root / "history.jsonl", "w") as out:
                out.writelines(json.dumps(op.summary()) + "\n" for op in history.ops)
            (cluster.root / "violations.json").write_text(json.dumps(violations, default=str))
        info = {
            "scenario": scenario.name,
            "seed": seed,
            "exclusive_keys": exclusive,
            "duration_s": duration,
            "elapsed_s": round(time.monotonic() - started, 1),
            "heal_s": round(heal_seconds, 1),
            "converge_s": round(converge_seconds, 1),
        }
        return _summary(info, history, faults, burst, violations, final, cluster)
    finally:
        faults.release()
        cluster.stop()


def start_cluster(root: Path, size: int, extra: list[str], attempts: int = 3) -> LocalCluster:
    """A started LocalCluster under `root`; started again on fresh ports when another process
    took one of the ports picked (free_port cannot reserve them)."""
    for attempt in range(attempts):
        cluster = LocalCluster(root / f"cluster{attempt}", size, extra)
        try:
            cluster.start(START_TIMEOUT)
            return cluster
        except (RuntimeError, TimeoutError):
            cluster.stop()
            taken = any(PORT_TAKEN in cluster.log(p.name) for p in cluster.peers)
            if not taken or attempt == attempts - 1:
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
            self.errors.append({"violation": "fault round failed", "error": repr(e)})


def observe(
    cluster: LocalCluster, keys: list[str], timeout: float
) -> tuple[dict[str, frozenset[str]], list[dict[str, Any]], float]:
    """Every key's final observation once all peers agree (r=N, then r=1) and every listing
    matches; the observations, convergence violations, and the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    r_all = min(N, len(cluster.peers))
    clients = {p.name: Client(p.http_url, timeout=OP_TIMEOUT) for p in cluster.peers}
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
