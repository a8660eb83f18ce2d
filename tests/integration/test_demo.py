"""`qfs demo --headless` on a Procfile: the demo creates its secure cluster's TLS folder on first
use, peers start over HTTPS, see each other, the client works without flags from the Procfile's
folder (client.toml), and the peers stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import free_port


def test_demo_starts_the_procfile_peers_and_stops_them(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    lines = []
    for i, (port, http) in enumerate(ports, 1):
        joins = " ".join(f"--join 127.0.0.1:{p}" for p, _ in ports if p != port)
        lines.append(
            f"p{i}: qfs peer --name p{i} --data data/p{i} --port {port} --http {http} {joins}"
            " --tls-dir data/cluster --admin-token-file data/cluster/admin.token"
        )
    procfile = tmp_path / "Procfile"
    procfile.write_text("\n".join(lines) + "\n")
    # This tree's code, whatever the venv has installed (the processes run in tmp_path).
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFS_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    demo = subprocess.Popen(
        [sys.executable, "-m", "peer.main", "demo", "--headless", "--procfile", str(procfile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
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
        assert cluster["security"]["insecure"] is False
        ca = ssl.create_default_context(cafile=tmp_path / "data" / "cluster" / "ca.crt")
        http = ports[1][1]
        answer = httpx.get(f"https://127.0.0.1:{http}/healthz", timeout=5, verify=ca)
        assert answer.status_code == 200
        with pytest.raises(httpx.ConnectError):  # the system's CAs do not know the demo's
            httpx.get(f"https://127.0.0.1:{http}/healthz", timeout=5)
        qfs = [sys.executable, "-m", "peer.main"]
        (tmp_path / "hello.txt").write_text("hello")
        for argv in (["put", "hello.txt", "/hello.txt"], ["ls"]):
            done = subprocess.run([*qfs, *argv], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["hello.txt"]
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
        for _, http in ports:
            try:
                httpx.get(f"https://127.0.0.1:{http}/healthz", timeout=2, verify=ca)
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
