"""Every chaos scenario, briefly: real peers, faults, a concurrent workload, then the checker.

Longer runs: ``pytest tests/chaos/test_scenarios.py --chaos-duration 120 --chaos-seed 7`` or
``python -m tests.chaos --scenario all --duration 120 --seed 7``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.runner import run
from tests.chaos.scenarios import SCENARIOS


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_holds_its_promises(name: str, tmp_path: Path, request: pytest.FixtureRequest):
    duration = request.config.getoption("--chaos-duration")
    seed = request.config.getoption("--chaos-seed")
    summary = run(name, seed, duration, tmp_path)
    violations = summary["violations"]
    kinds = Counter(str(v["violation"]) for v in violations)
    shown = json.dumps(violations[:3], indent=1, default=str)[:4000]
    assert not violations, f"{name} seed {seed}: {dict(kinds)}\n{shown}"
    assert summary["operations"] > 0 and summary["acknowledged"] > 0, summary
    assert summary["faults"] > 0, summary
