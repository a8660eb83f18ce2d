"""Real gossip agents on 127.0.0.1: five join, one is SIGKILLed, every survivor reports it dead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def events(path: Path) -> list[dict]:
    # Only whole lines: the last piece may still be being written.
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]


def latest_states(path: Path) -> dict[str, str]:
    return {e["member"]: e["state"] for e in events(path)}


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_agent(tmp: Path, name: str, port: int, join: list[int]) -> tuple[subprocess.Popen, Path]:
    out = tmp / f"{name}.jsonl"
    args = [sys.executable, "-m", "gossip", "agent", "--name", name, "--port", str(port)]
    for p in join:
        args += ["--join", f"127.0.0.1:{p}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(out, "w") as f, open(tmp / f"{name}.err", "w") as err:
        proc = subprocess.Popen(args, stdout=f, stderr=err, env=env, cwd=tmp)
    return proc, out


@pytest.mark.slow
def test_five_agents_detect_a_killed_one(tmp_path: Path) -> None:
    names = [f"a{i}" for i in range(5)]
    ports = [free_port() for _ in names]
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for i, name in enumerate(names):
            procs[name], logs[name] = start_agent(tmp_path, name, ports[i], ports[:1] if i else [])
        wait_for(
            lambda: all(latest_states(logs[n]) == dict.fromkeys(names, "alive") for n in names),
            60,
            "all five agents to see each other alive",
        )
        victim = names[3]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        survivors = [n for n in names if n != victim]
        wait_for(
            lambda: all(latest_states(logs[n]).get(victim) == "dead" for n in survivors),
            90,
            f"every survivor to report {victim} dead",
        )
        for n in survivors:  # and nobody else was declared dead (suspicion may come and go)
            false = [e for e in events(logs[n]) if e["state"] == "dead" and e["member"] != victim]
            assert not false, (n, false)
        # SIGTERM leaves gracefully: the others see "left", not "dead"
        leaver = survivors[-1]
        procs[leaver].send_signal(signal.SIGTERM)
        assert procs[leaver].wait(30) == 0
        wait_for(
            lambda: all(latest_states(logs[n]).get(leaver) == "left" for n in survivors[:-1]),
            30,
            f"the others to see {leaver} left",
        )
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
