"""Every chaos scenario, briefly: real peers, faults, a concurrent workload, then the checker.

Each runs for its `brief` seconds of faults (the older scenarios 7, the network, clock, disk,
membership ones 3, the soak 5), on the namespace network where this machine has one. A
scenario that shows a bug the repair layer still has is an expected failure naming that bug
(strict: fixing the bug makes the test fail until the mark is removed).

Longer runs: ``pytest tests/chaos/test_scenarios.py --chaos-duration 120 --chaos-seed 7`` or
``python -m tests.chaos --scenario all --duration 120 --seed 7``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.runner import default_netns, missing, run
from tests.chaos.scenarios import SCENARIOS

# scenario -> the bug it still shows (an expected failure until it is fixed); none today: the
# last one, disk-full's "RPC handler gc.begin failed" on StorageFull, is fixed (peer/rpc.py).
KNOWN_BUGS: dict[str, str] = {}


def _params() -> list[object]:
    params = []
    for name, scenario in SCENARIOS.items():
        use_netns = default_netns(scenario)
        marks = []
        lacking = missing(scenario, use_netns)
        if lacking:
            marks.append(pytest.mark.skip(reason=f"needs {lacking}"))
        if name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        params.append(pytest.param(name, use_netns, marks=marks, id=name))
    return params


@pytest.mark.parametrize(("name", "use_netns"), _params())
def test_scenario_holds_its_promises(
    name: str, use_netns: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scenario = SCENARIOS[name]
    duration = request.config.getoption("--chaos-duration") or scenario.brief
    seed = request.config.getoption("--chaos-seed")
    summary = run(name, seed, duration, tmp_path, use_netns=use_netns)
    violations = summary["violations"]
    kinds = Counter(str(v["violation"]) for v in violations)
    shown = json.dumps(violations[:3], indent=1, default=str)[:4000]
    assert not violations, f"{name} seed {seed}: {dict(kinds)}\n{shown}"
    assert summary["operations"] > 0 and summary["acknowledged"] > 0, summary
    assert summary["faults"] > 0, summary
