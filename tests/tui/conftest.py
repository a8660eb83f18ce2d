"""Fixtures of the TUI tests: a real 3-peer cluster, and the event loop for async tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cluster, start_cluster

from peer.client.launcher import stop


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (through anyio's pytest plugin), as Textual does."""
    return "asyncio"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh 3-peer cluster, stopped (SIGTERM, then SIGKILL by PID) after the test."""
    running = start_cluster(tmp_path)
    try:
        yield running
    finally:
        stop(running.peers)
