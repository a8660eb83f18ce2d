"""The allocator tuning a peer applies at start."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from peer.allocator import CLIENT_BUFFER, keep_buffers_in_heap
from peer.config import MAX_BLOCK_SIZE


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is a glibc interface")
@pytest.mark.parametrize("largest", [1 << 20, 2 * MAX_BLOCK_SIZE])
def test_glibc_takes_the_thresholds(largest: int) -> None:
    # In a child process, so the test run's own allocator is left as it was. A peer asks for
    # twice its block size, over glibc's ceiling for the largest blocks.
    code = f"from peer.allocator import keep_buffers_in_heap as k; print(k({largest}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_c_library_without_mallopt_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: object) -> object:
        raise OSError("no C library here")

    monkeypatch.setattr("peer.allocator.ctypes.CDLL", no_library)
    assert keep_buffers_in_heap(1 << 20) is False


def test_the_qfs_program_tunes_its_allocator_for_client_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import peer.main

    asked = []
    monkeypatch.setattr(peer.main, "keep_buffers_in_heap", asked.append)
    assert peer.main.main(["--help"]) == 0
    assert asked == [CLIENT_BUFFER]
