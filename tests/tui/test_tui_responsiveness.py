"""Measured against a real 3-peer cluster: time to a populated screen, and key-press-to-repaint
latency while a 200 MiB upload runs in a worker. Prints the figures (run with -s to see them).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import blake3
import pytest
from harness import Cluster, wait_until
from rich.console import RenderableType
from textual.screen import Screen

from tui.app import QfsApp
from tui.widgets.transfers import TransferRow

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
UPLOAD_BYTES = 200 << 20
FILES = 40
MIN_PRESSES = 6
MAX_UPLOADS = 8


async def test_start_time_and_repaint_latency_during_a_200_mib_upload(
    cluster: Cluster, tmp_path: Path
) -> None:
    seed = cluster.client()
    for i in range(FILES):
        seed.put(f"/file-{i:02}.txt", f"file {i}\n".encode())
    big = tmp_path / "big.bin"
    digest = blake3.blake3()
    with big.open("wb") as out:
        for _ in range(UPLOAD_BYTES >> 20):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)

    frames: list[tuple[float, int]] = []
    started = time.perf_counter()
    app = QfsApp(cluster.client())
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.files.table
        display = app._display  # measurement hook: the moment a frame goes to the terminal

        def record(screen: Screen[object], renderable: RenderableType | None) -> None:
            frames.append((time.perf_counter(), table.cursor_row))
            display(screen, renderable)

        app._display = record  # type: ignore[method-assign]
        await wait_until(pilot, lambda: table.row_count == FILES, what="listing")
        listed = time.perf_counter() - started
        await wait_until(pilot, lambda: len(table.health) >= min(FILES, 30), what="health")
        healthy = time.perf_counter() - started

        upload_started = time.perf_counter()
        latencies = []
        row = 0
        uploads = 0
        # Uploads run one after another until enough presses were measured while one was
        # running (a fast upload is over in a second or two). Each later one is a new file
        # with every block changed, so none is skipped as already stored.
        while len(latencies) < MIN_PRESSES and uploads < MAX_UPLOADS:
            if uploads:
                big = big.rename(tmp_path / f"big-{uploads}.bin")
                with big.open("r+b") as changing:
                    for block in range(UPLOAD_BYTES >> 20):
                        changing.seek(block << 20)
                        changing.write(uploads.to_bytes(8, "big"))
            app.files.start_upload(big, "/uploads")  # not the directory shown: rows stay put
            uploads += 1
            while app.query(TransferRow) and time.perf_counter() - upload_started < 240:
                row = 1 - row
                pressed = time.perf_counter()
                await pilot.press("down" if row else "up")
                await wait_until(
                    pilot,
                    lambda p=pressed, r=row: any(t > p and c == r for t, c in frames),
                    timeout=10,
                    what="repaint",
                )
                shown = next(t for t, c in frames if t > pressed and c == row)
                latencies.append(shown - pressed)
                await pilot.pause(0.03)
            await wait_until(pilot, lambda: not app.query(TransferRow), timeout=60, what="upload")
        upload_s = (time.perf_counter() - upload_started) / uploads

    stat = cluster.client(1).stat("/uploads/big.bin")
    assert stat["size"] == UPLOAD_BYTES and stat["blake3"] == digest.hexdigest()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1] if len(latencies) > 1 else latencies[0]
    print(
        f"\nstart to listing: {listed * 1000:.0f} ms; to health of visible rows: "
        f"{healthy * 1000:.0f} ms\n200 MiB upload ({uploads} of them): {upload_s:.1f} s "
        f"({UPLOAD_BYTES / (1 << 20) / upload_s:.1f} MiB/s); key press to repaint over "
        f"{len(latencies)} presses: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    assert len(latencies) >= MIN_PRESSES
    assert statistics.median(latencies) < 0.25
    assert listed < 10
