"""Settings every test shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's client config (./data/cluster/client.toml, which `qfs
    demo` writes); the ones about it set or clear QFS_CONFIG themselves."""
    monkeypatch.setenv("QFS_CONFIG", os.devnull)
