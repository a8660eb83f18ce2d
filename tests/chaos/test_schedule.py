"""The fault schedule is a function of the seed: same seed, same faults (no peers needed)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from tests.chaos import scenarios
from tests.chaos.scenarios import SCENARIOS, Chaos


class RecordingFaults:
    """Stands in for `Faults`: records every call instead of signalling processes, and keeps
    the membership that joins and leaves change."""

    def __init__(self, names: list[str], spares: int, clocks: int) -> None:
        self.declared = names
        self.absent = set(names[len(names) - spares :])
        self.clocks = dict.fromkeys(names[:clocks])
        self.calls: list[tuple[Any, ...]] = []

    @property
    def names(self) -> list[str]:
        return [n for n in self.declared if n not in self.absent]

    def serving(self) -> list[str]:
        return self.names

    def join(self, name: str) -> None:
        self.absent.discard(name)
        self.calls.append(("join", name))

    def leave(self, name: str) -> None:
        self.absent.add(name)
        self.calls.append(("leave", name))

    def __getattr__(self, method: str) -> Any:
        return lambda *args, **kw: self.calls.append((method, *args, *sorted(kw.items())))


class SilentBurst:
    """Stands in for `Burst`: records what would have been sent where."""

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.sent = 0

    def __getattr__(self, kind: str) -> Any:
        return lambda target: self.calls.append(("burst", kind, target))


def schedule(name: str, seed: int, rounds: int = 25) -> list[tuple[Any, ...]]:
    scenario = SCENARIOS[name]
    names = [f"p{i + 1}" for i in range(scenario.peers + scenario.spares)]
    faults = RecordingFaults(names, scenario.spares, scenario.clocks)
    uploader = SimpleNamespace(uploading="p2")
    ports = {n: (7000 + i, 8000 + i) for i, n in enumerate(names)}
    chaos = Chaos(faults, random.Random(seed), [uploader], SilentBurst(faults.calls), ports)
    for _ in range(rounds):
        scenario.step(chaos)
    return faults.calls


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_same_seed_gives_the_same_faults(name: str, monkeypatch) -> None:
    monkeypatch.setattr(scenarios.time, "sleep", lambda seconds: None)
    first = schedule(name, seed=5)
    assert first, "the scenario injected nothing"
    assert schedule(name, seed=5) == first
    assert schedule(name, seed=6) != first
