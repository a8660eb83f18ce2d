"""Local exposure probes of issue 17 against real `qfs peer` processes: what other local users
can read of a peer's data directory, secret files they could read, a guessable admin token, and
guessing tokens as fast as the peer answers."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peer.client import launcher
from tests.support import LocalCluster, free_port, running_cluster

ADMIN = secrets.token_urlsafe(24)
SINGLE = ["--replicas", "1", "--read-quorum", "1", "--write-quorum", "1"]


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Iterator[LocalCluster]:
    """One peer with tokens on, whose data directory an older version left readable."""
    root = tmp_path_factory.mktemp("local")
    data = root / "p1"
    data.mkdir(mode=0o755)
    (data / "node_id").write_text(secrets.token_hex(16) + "\n")
    (data / "node_id").chmod(0o644)
    token = secret_file(root / "admin.token", ADMIN)
    with running_cluster(root, 1, [*SINGLE, "--admin-token-file", str(token)], ADMIN) as running:
        yield running


def test_no_other_local_user_can_read_a_peers_data(peer: LocalCluster) -> None:
    url = peer.peer("p1").http_url
    headers = {"Authorization": f"Bearer {ADMIN}"}
    answer = httpx.put(f"{url}/v1/files/f", content=os.urandom(100_000), headers=headers)
    assert answer.status_code == 201
    data = peer.root / "p1"
    found = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")}
    found["."] = stat.S_IMODE(data.stat().st_mode)
    assert found["."] == 0o700 and found["blocks"] == 0o700
    assert found["node_id"] == found["records.sqlite"] == 0o600  # tightened, and created so
    assert any(re.fullmatch(r"blocks/../[0-9a-f]{64}", name) for name in found)
    assert {name: mode for name, mode in found.items() if mode & 0o077} == {}


def refusal(tmp_path: Path, *flags: str) -> str:
    """Start a peer with `flags`; it must refuse at once: its stderr."""
    argv = launcher.peer_argv("solo", tmp_path / "data", free_port(), free_port(), extra=flags)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    return done.stderr


def test_secret_files_others_may_read_and_short_admin_tokens_are_refused(tmp_path) -> None:
    readable = secret_file(tmp_path / "admin.token", ADMIN, 0o640)
    said = refusal(tmp_path, *SINGLE, "--admin-token-file", str(readable))
    assert "permissions 0640 are too open" in said and f"chmod 600 {readable}" in said
    key = secret_file(tmp_path / "cluster.key", secrets.token_hex(32), 0o644)
    said = refusal(tmp_path, *SINGLE, "--cluster-key-file", str(key))
    assert "cluster key file" in said and "permissions 0644 are too open" in said
    short = secret_file(tmp_path / "short.token", "abc")
    said = refusal(tmp_path, *SINGLE, "--admin-token-file", str(short))
    assert "16-512 printable ASCII characters" in said and "it has 3" in said


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def test_guessing_tokens_is_rate_limited_per_address(peer: LocalCluster) -> None:
    url = peer.peer("p1").http_url
    before = metric(url, "qfs_auth_failures_total")
    statuses: list[int] = []
    with httpx.Client(base_url=url) as guesser:
        while 429 not in statuses and len(statuses) < 60:
            guess = f"Bearer guess-{len(statuses)}"
            statuses.append(guesser.get("/v1/whoami", headers={"Authorization": guess}).status_code)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        refused = guesser.get("/v1/whoami", headers=admin)  # not even checked
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429, statuses
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_requests"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    elsewhere = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert elsewhere.get(f"{url}/v1/whoami", headers=admin).status_code == 200
    assert metric(url, "qfs_auth_failures_total") - before == len(statuses) - 1
    assert metric(url, "qfs_auth_rate_limited_total") >= 2
    time.sleep(retry_after)
    assert httpx.get(f"{url}/v1/whoami", headers=admin).json()["admin"] is True
