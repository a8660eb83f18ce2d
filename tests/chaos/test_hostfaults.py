"""The clock and disk faults themselves: a program under `FakeClock` sees the offset the test
writes, while it runs; a `SmallDisk` fills to ENOSPC, is freed, and is unmounted at the end."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos import hostfaults
from tests.chaos.hostfaults import FakeClock, SmallDisk

CLOCK_READER = """
import sys, time
while True:
    print(round(time.time()), round(time.monotonic()), flush=True)
    sys.stdin.readline()
"""


@pytest.mark.skipif(not hostfaults.clock_available(), reason="needs libfaketime (faketime)")
def test_a_fake_clock_moves_a_running_programs_wall_clock_only(tmp_path: Path) -> None:
    clock = FakeClock(tmp_path / "clock")
    clock.set(-3 * 3600)
    reader = subprocess.Popen(
        [*clock.env(), sys.executable, "-c", CLOCK_READER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdin is not None and reader.stdout is not None
        wall, monotonic = map(int, reader.stdout.readline().split())
        assert abs(wall - (time.time() - 3 * 3600)) < 5
        assert abs(monotonic - time.monotonic()) < 5  # no kernel steps CLOCK_MONOTONIC
        clock.set(2 * 3600)
        deadline = time.monotonic() + 10  # FAKETIME_CACHE_DURATION=1: seen within 2 s
        while abs(wall - (time.time() + 2 * 3600)) > 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            reader.stdin.write("\n")
            reader.stdin.flush()
            wall, monotonic = map(int, reader.stdout.readline().split())
        assert abs(wall - (time.time() + 2 * 3600)) < 5
        assert abs(monotonic - time.monotonic()) < 5
    finally:
        reader.kill()
        reader.wait()


@pytest.mark.skipif(not hostfaults.disk_available(), reason="needs root for tmpfs mounts")
def test_a_small_disk_fills_frees_and_is_unmounted(tmp_path: Path) -> None:
    disk = SmallDisk(tmp_path / "data", "8M")
    disk.mount()
    try:
        assert os.path.ismount(disk.path)
        assert disk.fill() > 7 << 20
        with pytest.raises(OSError) as full:
            (disk.path / "more").write_bytes(b"x" * 65536)
        assert full.value.errno == errno.ENOSPC
        disk.free()
        (disk.path / "more").write_bytes(b"x" * 65536)
    finally:
        disk.unmount()
    assert not os.path.ismount(disk.path)
    disk.unmount()  # idempotent
