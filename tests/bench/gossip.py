"""Real gossip agents on 127.0.0.1: join, detection, pauses, idle cost. Not a pytest test.

    .venv/bin/python tests/bench/gossip.py --members 10 --trials 3 [--json]

Per trial: start a seed, then N-1 agents joining it at once; measure join convergence (every
agent has printed all N members alive), both from the moment they were launched and from the
moment the last one was ready (its own first event line); idle CPU and RSS per agent; SIGSTOP
one agent for less than the suspicion timeout (it must never be reported dead); SIGSTOP one
until every other agent reports it dead, SIGCONT it and measure until all report it alive
again; SIGKILL one and measure until the first and the last survivor report it dead.
Timings come from the agents' own JSON lines (``t`` = wall-clock time of the event).

The same run measures the import baseline (a Python process importing Twisted, cbor2 and
blake3, then exiting): N Python agents starting on a small machine need that CPU first.
Only processes started here are signalled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(taken: set[int]) -> int:
    """A port free for both TCP and UDP right now."""
    while True:
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            if port in taken:
                continue
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            taken.add(port)
            return port


class Agent:
    """One agent process and its event log."""

    def __init__(
        self, workdir: Path, name: str, port: int, seed: int | None, probe_interval: float
    ) -> None:
        self.name = name
        self.log = workdir / f"{name}.jsonl"
        args = [
            sys.executable,
            "-m",
            "gossip",
            "agent",
            "--name",
            name,
            "--port",
            str(port),
            "--probe-interval",
            str(probe_interval),
        ]
        if seed is not None:
            args += ["--join", f"127.0.0.1:{seed}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "w") as out, open(workdir / f"{name}.err", "w") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=workdir)

    def events(self) -> list[dict]:
        # Only whole lines: the last piece may still be being written.
        return [json.loads(line) for line in self.log.read_text().split("\n")[:-1]]

    def ready_at(self) -> float | None:
        evs = self.events()
        return evs[0]["t"] if evs else None

    def all_alive_at(self, names: set[str]) -> float | None:
        """When this agent first had every one of ``names`` alive."""
        state: dict[str, str] = {}
        for e in self.events():
            state[e["member"]] = e["state"]
            if all(state.get(n) == "alive" for n in names):
                return e["t"]
        return None

    def first(self, member: str, state: str, since: float) -> float | None:
        for e in self.events():
            if e["member"] == member and e["state"] == state and e["t"] >= since:
                return e["t"]
        return None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan


def wait_until(predicate, timeout: float, poll: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; return its value, or None on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def import_baseline() -> float:
    """Seconds for a Python process to import Twisted's reactor, cbor2 and blake3 and exit."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import twisted.internet.reactor, cbor2, blake3"], check=True
    )
    return time.perf_counter() - t0


def trial(n: int, workdir: Path, args: argparse.Namespace) -> dict:
    taken: set[int] = set()
    agents: list[Agent] = []
    names = {f"g{i}" for i in range(n)}
    out: dict = {}
    try:
        seed_port = free_port(taken)
        agents.append(Agent(workdir, "g0", seed_port, None, args.probe_interval))
        if not wait_until(agents[0].ready_at, 30):
            raise RuntimeError("the seed agent did not start")
        t0 = time.time()
        for i in range(1, n):
            agents.append(Agent(workdir, f"g{i}", free_port(taken), seed_port, args.probe_interval))
        if not wait_until(
            lambda: all(a.all_alive_at(names) for a in agents), args.timeout, poll=0.2
        ):
            raise RuntimeError("the agents never converged")
        converged = max(a.all_alive_at(names) for a in agents)  # type: ignore[type-var]
        last_ready = max(a.ready_at() for a in agents)  # type: ignore[type-var]
        out["join_converge_s"] = converged - t0
        out["join_after_last_ready_s"] = converged - last_ready

        time.sleep(3)  # let the join traffic settle
        cpu0 = [a.cpu_seconds() for a in agents]
        w0 = time.time()
        time.sleep(args.idle_seconds)
        elapsed = time.time() - w0
        pct = [100 * (a.cpu_seconds() - c) / elapsed for a, c in zip(agents, cpu0, strict=True)]
        rss = [a.rss_mb() for a in agents]
        out["idle_cpu_pct_mean"] = statistics.mean(pct)
        out["idle_cpu_pct_max"] = max(pct)
        out["rss_mb_mean"] = statistics.mean(rss)
        out["rss_mb_max"] = max(rss)

        min_suspicion = 4 * max(1.0, math.log10(n)) * args.probe_interval
        if not args.no_pause:
            # A pause shorter than the suspicion timeout: suspected perhaps, never dead.
            short = agents[1]
            pause = 0.75 * min_suspicion
            ts = time.time()
            short.proc.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            short.proc.send_signal(signal.SIGCONT)
            time.sleep(min_suspicion * 6 + 5)  # past the longest suspicion timer
            out["short_pause_s"] = pause
            out["short_pause_declared_dead_by"] = sum(
                1 for a in agents if a is not short and a.first(short.name, "dead", ts)
            )
            out["short_pause_suspected_by"] = sum(
                1 for a in agents if a is not short and a.first(short.name, "suspect", ts)
            )

            # A long pause: declared dead, then alive again everywhere soon after SIGCONT.
            long = agents[2]
            others = [a for a in agents if a is not long]
            ts = time.time()
            long.proc.send_signal(signal.SIGSTOP)
            dead = wait_until(
                lambda: all(a.first(long.name, "dead", ts) for a in others), args.timeout, poll=0.1
            )
            tc = time.time()
            long.proc.send_signal(signal.SIGCONT)
            if dead:
                back = wait_until(
                    lambda: all(a.first(long.name, "alive", tc) for a in others),
                    args.timeout,
                    poll=0.05,
                )
                out["long_pause_s"] = tc - ts
                out["long_pause_realive_all_s"] = (
                    max(a.first(long.name, "alive", tc) for a in others) - tc  # type: ignore
                    if back
                    else None
                )
            time.sleep(3)

        victim = agents[-1]
        survivors = [a for a in agents if a is not victim]
        tk = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        ok = wait_until(
            lambda: all(a.first(victim.name, "dead", tk) for a in survivors), args.timeout, poll=0.1
        )
        seen = [t for a in survivors if (t := a.first(victim.name, "dead", tk))]
        out["detect_first_s"] = min(seen) - tk if seen else None
        out["detect_all_s"] = max(seen) - tk if ok else None
        # Dead reports about anyone never meant to look dead (neither killed nor long-paused).
        meant = {victim.name} | ({agents[2].name} if not args.no_pause else set())
        out["false_dead_reports"] = sum(
            1
            for a in survivors
            for e in a.events()
            if e["state"] == "dead" and e["member"] not in meant
        )
        return out
    finally:
        for a in agents:
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGCONT)
                a.proc.kill()
                a.proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--probe-interval", type=float, default=1.0)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--no-pause", action="store_true", help="skip the SIGSTOP measurements")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    baseline = statistics.median(import_baseline() for _ in range(3))
    results = []
    for t in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="gossip-bench-") as d:
            r = trial(args.members, Path(d), args)
        results.append(r)
        if not args.json:
            print(
                f"trial {t + 1}: "
                + " ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                ),
                flush=True,
            )
    summary: dict = {
        "members": args.members,
        "trials": args.trials,
        "probe_interval": args.probe_interval,
        "import_baseline_s": round(baseline, 3),
    }
    for key in results[0]:
        values = [r[key] for r in results if r.get(key) is not None]
        if all(isinstance(v, float) for v in values) and values:
            summary[key + "_median"] = round(statistics.median(values), 3)
            summary[key + "_max"] = round(max(values), 3)
        else:
            summary[key] = [r.get(key) for r in results]
    print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
