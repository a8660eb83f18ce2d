"""The simulator: small clusters, fast, seeded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossip import sim

ROOT = Path(__file__).resolve().parents[2]


def test_lossy_cluster_detects_every_failure_without_false_positives() -> None:
    r = sim.run(40, fail=3, loss=0.05, periods=80, seed=11)
    assert r["failed"] == 3
    assert r["failures_not_disseminated"] == 0
    assert r["false_positives"] == 0
    # suspicion needs at least min timeout = 4 * log10(40) periods after the first detection
    assert 6.4 < r["periods_to_full_dissemination"] < 20
    assert r["periods_to_first_detection"] < r["periods_to_first_dead"]
    assert 2 <= r["messages_per_member_per_period"] < 10


def test_no_false_positives_over_a_long_lossy_run() -> None:
    r = sim.run(30, fail=0, loss=0.05, periods=400, seed=12)
    assert r["false_positives"] == 0


def test_same_seed_same_result() -> None:
    a = sim.run(20, fail=1, loss=0.02, periods=30, seed=5)
    b = sim.run(20, fail=1, loss=0.02, periods=30, seed=5)
    a.pop("wall_seconds")
    b.pop("wall_seconds")
    assert a == b


def test_command_line_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--members", "12", "--fail", "1", "--periods", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("members", "periods_to_first_detection", "periods_to_full_dissemination",
                "false_positives", "messages_per_member_per_period",
                "bytes_per_member_per_period"):
        assert key in out
    assert out["members"] == 12 and out["false_positives"] == 0


def test_command_line_rejects_nonsense() -> None:
    with pytest.raises(SystemExit):
        sim.main(["--members", "1", "--json"])


def test_core_and_simulator_import_no_twisted() -> None:
    code = ("import sys, gossip.membership, gossip.sim; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'peer', 'storage', 'tui')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
