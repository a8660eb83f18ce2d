"""`qfs demo --headless` on a Procfile: peers start, see each other, and stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port


def test_demo_starts_the_procfile_peers_and_stops_them(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    lines = []
    for i, (port, http) in enumerate(ports, 1):
        joins = " ".join(f"--join 127.0.0.1:{p}" for p, _ in ports if p != port)
        lines.append(
            f"p{i}: qfs peer --name p{i} --data data/p{i} --port {port} --http {http} {joins}"
        )
    procfile = tmp_path / "Procfile"
    procfile.write_text("\n".join(lines) + "\n")
    demo = subprocess.Popen(
        [sys.executable, "-m", "peer.main", "demo", "--headless", "--procfile", str(procfile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        printed, line = "", ""
        while line.rstrip("\n") != "}":  # the cluster JSON, pretty-printed, ends with "}"
            line = demo.stdout.readline().decode()
            assert line, demo.stderr.read().decode()
            printed += line
        cluster = json.loads(printed)
        assert sorted(m["name"] for m in cluster["members"]) == ["p1", "p2", "p3"]
        assert all(m["state"] == "alive" for m in cluster["members"])
        http = ports[1][1]
        assert httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=5).status_code == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
        for _, http in ports:
            try:
                httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=2)
                raise AssertionError(f"a peer still answers on {http} after the demo stopped")
            except httpx.TransportError:
                pass
        assert (tmp_path / "data" / "logs" / "p1.log").exists()
    finally:
        if demo.poll() is None:  # a failed assertion: SIGTERM first, so the demo stops its peers
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
