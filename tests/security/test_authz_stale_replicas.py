"""Permission checks that stale replicas must not decide, on three real peers with tokens on:
a user's `?r=1` read served from the one replica that missed a chmod, and a `?version=` read
checked against that sibling's own mode instead of the file's merged one.

Replicas are made stale with signals (no anti-entropy during the test): alice's chmod and a
new version A reach p1 and p2 while p3 is killed; then, p1 and p2 stopped (SIGSTOP), p3 alone
answers bob and takes the admin's version B. Stopped peers are never restarted, so they come
back with their data as it was.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from peer.client import launcher
from tests.support import LocalCluster, running_cluster

ADMIN = secrets.token_urlsafe(24)


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN)
    token_file.chmod(0o600)
    extra = ["--admin-token-file", str(token_file), "--anti-entropy-interval", "3600"]
    with running_cluster(tmp_path, 3, extra, ADMIN) as running:
        yield running


def client(cluster: LocalCluster, peer: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.peer(peer).http_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_stale_replicas_never_decide_what_a_user_may_read(cluster: LocalCluster) -> None:
    admin = client(cluster, "p1", ADMIN)
    tokens = {}
    for name in ("alice", "bob"):
        created = admin.post("/v1/tokens", json={"user": name})
        assert created.status_code == 201
        tokens[name] = created.json()["token"]
    alice = client(cluster, "p1", tokens["alice"])
    for path, data in (("/f", b"secret"), ("/v", b"v1")):
        assert alice.put(f"/v1/files{path}", content=data, params={"mode": "0644"}).is_success
    cluster.kill("p3")
    assert alice.patch("/v1/stat/f", json={"mode": "0600"}).status_code == 200  # p1, p2
    opened = alice.put("/v1/files/v", content=b"open")  # version A, 0644: on p1 and p2
    assert opened.status_code == 201
    cluster.restart("p3")  # still has /f at 0644 and /v at its first version

    bob_at_p3 = client(cluster, "p3", tokens["bob"])
    assert bob_at_p3.get("/v1/whoami").json()["user"] == "bob"  # p3 caches bob's token
    seen = {}  # every probe's status, checked at the end (each fails on the old code)
    stopped = ("p1", "p2")
    try:
        for name in stopped:
            cluster.kill(name, signal.SIGSTOP)
        # ?r=1: only p3 answers (p1 and p2 hang until the RPC timeout).
        with ThreadPoolExecutor(2) as pool:
            routes = ("/v1/files/f", "/v1/stat/f")
            answers = pool.map(lambda route: bob_at_p3.get(route, params={"r": "1"}), routes)
            for route, answer in zip(routes, answers, strict=True):
                seen[f"{route}?r=1"] = answer.status_code
        # ?version=: the admin writes version B (0600) through p3 alone, concurrent with A.
        closed = client(cluster, "p3", ADMIN).put(
            "/v1/files/v", content=b"closed", params={"w": "1", "mode": "0600"}
        )
        assert closed.status_code == 201, closed.text
    finally:
        for name in stopped:
            cluster.kill(name, signal.SIGCONT)
    launcher.wait_converged(cluster.peers, 30, ADMIN)
    bob = client(cluster, "p1", tokens["bob"])
    siblings = bob.get("/v1/stat/v", params={"r": "3"})
    assert siblings.status_code == 300, siblings.text  # A and B, the file's mode now 0600
    version_a = opened.json()["version"]
    seen["/v1/files/v?version=A"] = bob.get(
        "/v1/files/v", params={"version": version_a, "r": "3"}
    ).status_code
    assert alice.get("/v1/files/v", params={"version": version_a, "r": "3"}).content == b"open"
    assert seen == {"/v1/files/f?r=1": 503, "/v1/stat/f?r=1": 503, "/v1/files/v?version=A": 403}
