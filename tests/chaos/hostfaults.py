"""Faults of a peer's host rather than its network: a wall clock that jumps, a disk that fills.

Clock: the peer runs under libfaketime (Debian `faketime`) reading its offset from a file the
test rewrites (``FAKETIME_TIMESTAMP_FILE``; ``FAKETIME_CACHE_DURATION=1`` makes a step show
within 2 s, where ``FAKETIME_NO_CACHE`` would read the file on every clock call). Only the wall
clock moves: ``FAKETIME_DONT_FAKE_MONOTONIC``, since no kernel steps CLOCK_MONOTONIC. (libfaketime
0.9.10 then breaks ``time.sleep`` on Python 3.11, wolfcw/libfaketime#426; a peer never calls it.)

Disk: the peer's data directory is a tmpfs of a few MiB that a ballast file fills to the last
byte and that is freed by removing it; unmounted when the run ends, whatever happened (also by
atexit).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

# The single-threaded build: the MT one made a peer many times slower here.
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path())
BALLAST = "ballast.chaos"


def clock_available() -> bool:
    """Whether libfaketime is installed."""
    return LIBFAKETIME.is_file()


def disk_available() -> bool:
    """Whether tmpfs can be mounted here (root, `mount` present)."""
    return os.geteuid() == 0 and shutil.which("mount") is not None


class FakeClock:
    """The wall-clock offset of one peer, in a file its libfaketime reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        self.set(0.0)

    def env(self) -> list[str]:
        """An `env` command prefix that runs a program on this clock."""
        return [
            "env",
            f"LD_PRELOAD={LIBFAKETIME}",
            f"FAKETIME_TIMESTAMP_FILE={self.path}",
            "FAKETIME_CACHE_DURATION=1",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
        ]

    def set(self, seconds: float) -> None:
        """Put the wall clock `seconds` ahead of true time (behind when negative)."""
        self.offset = seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(f"{seconds:+.0f}\n")
        os.replace(temporary, self.path)  # libfaketime never reads a half-written offset


class SmallDisk:
    """A tmpfs of `size` mounted on `path` (the peer's data directory)."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self.full = False

    def mount(self) -> None:
        """Mount it (the directory is made if needed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.mounted = True
        atexit.register(self.unmount)

    def fill(self) -> int:
        """Write ballast until the file system is full; the bytes written."""
        written = 0
        chunk = b"\0" * (1 << 20)
        with open(self.path / BALLAST, "ab", buffering=0) as out:
            while len(chunk) >= 512:
                try:
                    written += out.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        self.full = True
        return written

    def free(self) -> None:
        """Remove the ballast."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / BALLAST).unlink()
        self.full = False

    def unmount(self) -> None:
        """Unmount (lazily if a process still holds it open); idempotent."""
        if not self.mounted:
            return
        result = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
        self.mounted = False
        atexit.unregister(self.unmount)
