"""Crash safety of one data dir with real processes: SIGKILL a writer at random moments.

After each kill the data dir must reopen (the lock died with the process), hold every block and
record the child acknowledged on stdout before it died, contain only block files that verify,
and have no temp files left in incoming/.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from storage_child import WRITER, record_value

from storage.datadir import DataDir, DataDirLocked
from storage.vclock import VectorClock

CHILD = Path(__file__).with_name("storage_child.py")
ROOT = Path(__file__).resolve().parents[2]

SEEDS = [1, 2, 3, 4, 5]
ROUNDS = 2  # kills per data dir: the second run starts from a crashed state


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def wait_ready(child: subprocess.Popen[bytes]) -> None:
    assert child.stdout is not None and child.stderr is not None
    line = child.stdout.readline()
    if line != b"ready\n":
        child.kill()
        child.wait()
        pytest.fail(f"child did not start: {line!r} {child.stderr.read().decode()}")


def kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def run_and_kill(path: Path, seed: int, delay: float) -> list[str]:
    """Run a writer, SIGKILL it ``delay`` seconds after it opened the dir; its ack lines."""
    child = spawn("write", str(path), str(seed))
    lines: list[bytes] = []
    try:
        wait_ready(child)
        assert child.stdout is not None
        stdout = child.stdout
        reader = threading.Thread(target=lambda: lines.extend(stdout))
        reader.start()
        time.sleep(delay)  # the random kill moment, not synchronisation
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reader.join()
    finally:
        kill(child)
    assert child.returncode == -signal.SIGKILL
    # A line cut short by the kill has no newline: not acknowledged.
    return [line.decode() for line in lines if line.endswith(b"\n")]


def check(path: Path, acks: list[str]) -> int:
    """Reopen and verify everything; returns how many acknowledgements were checked."""
    acked_blocks: set[str] = set()
    acked_records: dict[str, int] = {}
    for line in acks:
        kind, *fields = line.split()
        if kind == "B":
            acked_blocks.add(fields[0])
        else:
            for key, counter in zip(fields[::2], fields[1::2], strict=True):
                acked_records[key] = max(acked_records.get(key, 0), int(counter))
    with DataDir(path) as data:  # the lock is free again
        assert os.listdir(path / "blocks" / "incoming") == []
        stored = set(data.blocks.hashes())
        for block in stored:
            data.blocks.get(block)  # raises BlockCorrupt on a torn block
        assert data.blocks.quarantined() == []
        assert acked_blocks <= stored
        for key, counter in acked_records.items():
            siblings = data.records.get(key)
            assert len(siblings) == 1, (key, siblings)
            clock = siblings[0].clock
            assert clock == VectorClock({WRITER: clock.entries[WRITER]})
            assert clock.entries[WRITER] >= counter, (key, counter, clock)
            assert siblings[0].value == record_value(key, clock.entries[WRITER])
        for key, siblings in data.records.range():  # unacknowledged ones are whole too
            assert [s.value for s in siblings] == [
                record_value(key, s.clock.entries[WRITER]) for s in siblings
            ]
    return len(acked_blocks) + len(acked_records)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    acks: list[str] = []
    for round in range(ROUNDS):
        acks += run_and_kill(tmp_path / "data", seed * 100 + round, rng.uniform(0.05, 0.5))
        check(tmp_path / "data", acks)
    assert acks, "the writer acknowledged nothing before being killed"


@pytest.mark.timeout(60)
def test_second_process_cannot_open_a_locked_dir(tmp_path: Path) -> None:
    with DataDir(tmp_path) as data:
        result = subprocess.run(
            [sys.executable, str(CHILD), "open", str(tmp_path)],
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            timeout=30,
        )
        assert result.returncode == 3, result.stderr.decode()
        message = result.stdout.decode()
        assert str(tmp_path) in message and f"process {os.getpid()}" in message
        assert data.records.count() == 0  # owner still fine


@pytest.mark.timeout(60)
def test_lock_held_by_another_process_until_it_dies(tmp_path: Path) -> None:
    holder = spawn("hold", str(tmp_path))
    try:
        wait_ready(holder)
        with pytest.raises(DataDirLocked, match=f"process {holder.pid}"):
            DataDir(tmp_path)
    finally:
        kill(holder)
    with DataDir(tmp_path) as data:  # the kernel dropped the dead holder's lock
        assert (tmp_path / "LOCK").read_text() == f"{os.getpid()}\n"
        assert data.node_id
