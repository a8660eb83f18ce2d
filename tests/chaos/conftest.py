"""Flags for longer chaos runs under pytest: ``--chaos-duration 120 --chaos-seed 7``."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the chaos suite's flags."""
    group = parser.getgroup("chaos")
    group.addoption(
        "--chaos-duration",
        type=float,
        default=None,
        help="seconds of faults per run (default: each scenario's brief duration)",
    )
    group.addoption("--chaos-seed", type=int, default=1, help="seed of the fault scheduler")
