"""Tokens and permissions on real `qfs peer` processes started with --admin-token-file, and
peer start-up from a TOML config file."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from peer.client import launcher
from peer.client.api_client import QfsError
from peer.client.launcher import PeerProcess
from tests.support import LocalCluster, free_port, running_cluster, wait_for

PEERS = ("p1", "p2", "p3")
ADMIN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("auth")
    token_file = root / "admin.token"
    token_file.write_text(ADMIN + "\n")
    token_file.chmod(0o600)  # a token file others may read is refused
    extra = ["--admin-token-file", str(token_file)]
    with running_cluster(root, 3, extra=extra, token=ADMIN) as running:
        yield running


def qfs(
    cluster: LocalCluster, *args: str, token: str | None, peer: str = "p1"
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QFS_TOKEN"}
    if token is not None:
        env["QFS_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "peer.main", "--peer", cluster.peer(peer).http_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def token_for(cluster: LocalCluster, user: str, groups: str = "") -> str:
    created = qfs(cluster, "token", "create", user, "--groups", groups, token=ADMIN)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def raw_status(url: str, path: str, authorization: bytes) -> int:
    """GET `path` with an Authorization header of arbitrary bytes; the status code, or 0 when
    the peer closed the connection without an answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        connection.putheader("Authorization", authorization)
        connection.endheaders()
        return connection.getresponse().status
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return 0
    finally:
        connection.close()


def test_anonymous_and_garbage_tokens_are_401_never_500(cluster) -> None:
    url = cluster.peer("p2").http_url
    for path in ("/v1/dirs/", "/v1/files/x", "/v1/cluster", "/v1/whoami", "/v1/tokens"):
        answer = httpx.get(url + path)
        assert answer.status_code == 401, path
        assert answer.json()["error"] == "unauthorized"
        assert "Authorization" in answer.json()["detail"]
    assert httpx.get(url + "/healthz").status_code == 200
    for header in [
        b"Bearer nope",
        b"Bearer qfs_0123456789abcdef_" + b"A" * 43,
        b"Basic YWRtaW46YWRtaW4=",
        b"Bearer",
        b"Bearer " + b"x" * 10_000,
        "Bearer jeton-\u00e9t\u00e9".encode(),
        b"Bearer \xff\xfe\xfd",
        b"garbage !@#$%^&*() {}",
    ]:
        assert raw_status(url, "/v1/dirs/", header) == 401, header[:40]
    # Not valid HTTP for twisted (control characters, headers past 16 KiB): refused by the
    # HTTP layer with a 400 or a closed connection, never a 500; the peer keeps serving.
    for header in [b"\x00\x01garbage", b"Bearer " + b"x" * 100_000]:
        assert raw_status(url, "/v1/dirs/", header) in (0, 400)
    assert httpx.get(url + "/healthz").status_code == 200


def test_owners_modes_and_what_other_users_may_do(cluster, tmp_path: Path) -> None:
    alice = token_for(cluster, "alice", "staff")
    bob = token_for(cluster, "bob", "dev")
    who = qfs(cluster, "whoami", "--json", token=alice, peer="p3")
    assert who.returncode == 0, who.stderr
    assert '"user": "alice"' in who.stdout and '"admin": false' in who.stdout
    local = tmp_path / "a.txt"
    local.write_bytes(b"alice's data")
    local.chmod(0o644)
    put = qfs(cluster, "put", str(local), "/a.txt", token=alice)
    assert put.returncode == 0, put.stderr
    stat = qfs(cluster, "stat", "/a.txt", "--json", token=bob, peer="p2")
    assert '"owner": "alice"' in stat.stdout and '"mode": "0644"' in stat.stdout
    assert qfs(cluster, "get", "/a.txt", "-", token=bob, peer="p3").stdout == "alice's data"
    refused = qfs(cluster, "put", str(local), "/a.txt", token=bob, peer="p2")
    assert refused.returncode == 1 and "403 forbidden" in refused.stderr
    assert qfs(cluster, "rm", "/a.txt", token=bob).returncode == 1
    assert qfs(cluster, "chmod", "0666", "/a.txt", token=bob).returncode == 1
    assert qfs(cluster, "chmod", "0600", "/a.txt", token=alice, peer="p2").returncode == 0
    for peer in PEERS:
        denied = qfs(cluster, "get", "/a.txt", "-", token=bob, peer=peer)
        assert denied.returncode == 1 and "403" in denied.stderr
        assert qfs(cluster, "get", "/a.txt", "-", token=ADMIN, peer=peer).stdout == "alice's data"
    assert qfs(cluster, "chown", "bob", "/a.txt", token=alice).returncode == 1
    assert qfs(cluster, "chown", "bob:dev", "/a.txt", token=ADMIN).returncode == 0
    assert qfs(cluster, "get", "/a.txt", "-", token=bob).stdout == "alice's data"
    listing = qfs(cluster, "ls", "-l", "/", token=bob, peer="p3")
    assert "bob" in listing.stdout and "dev" in listing.stdout
    with cluster.client("p1", token=alice) as client:
        with pytest.raises(QfsError) as forbidden:
            client.token_list()
        assert forbidden.value.status == 403


def test_a_revoked_token_is_refused_by_every_peer_within_5_seconds(cluster) -> None:
    carol = token_for(cluster, "carol")
    for peer in PEERS:
        with cluster.client(peer, token=carol) as client:
            assert client.whoami()["user"] == "carol"
    with cluster.client("p1") as admin:
        (listed,) = [t for t in admin.token_list() if t["user"] == "carol"]
        assert set(listed) == {"id", "user", "groups", "admin"}
        assert carol not in str(admin.token_list())
        admin.token_revoke(listed["id"])
    revoked = time.monotonic()
    refused_after = {}
    while len(refused_after) < len(PEERS) and time.monotonic() - revoked < 10:
        for peer in PEERS:
            if peer in refused_after:
                continue
            answer = httpx.get(
                cluster.peer(peer).http_url + "/v1/whoami",
                headers={"Authorization": f"Bearer {carol}"},
            )
            if answer.status_code == 401:
                refused_after[peer] = time.monotonic() - revoked
        time.sleep(0.05)
    print(f"revoked token refused after {refused_after}")
    assert set(refused_after) == set(PEERS)
    assert max(refused_after.values()) < 5.0


def start_peer(root: Path, argv: list[str]) -> PeerProcess:
    peer = PeerProcess("solo", [*launcher.qfs_command(), "peer", *argv], "")
    launcher.start(peer, log_dir=root / "logs")
    return peer


def test_a_public_http_bind_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    argv = ["--name", "solo", "--data", str(tmp_path / "d"), "--port", str(free_port())]
    argv += ["--http", str(free_port()), "--http-bind", "0.0.0.0", "--tls-dir", str(tmp_path)]
    refused = subprocess.run(
        [*launcher.qfs_command(), "peer", *argv], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2
    assert "http-bind" in refused.stderr and "--admin-token-file" in refused.stderr


def test_a_peer_starts_from_a_toml_file_and_a_flag_overrides_a_key(tmp_path: Path) -> None:
    http_in_file, http_flag = free_port(), free_port()
    config = tmp_path / "peer.toml"
    config.write_text(
        f'name = "solo"\ndata = "{tmp_path / "data"}"\nport = {free_port()}\n'
        f"http = {http_in_file}\nreplicas = 1\nread-quorum = 1\nwrite-quorum = 1\n"
        "insecure = true\n"
    )
    peer = start_peer(tmp_path, ["--config", str(config), "--http", str(http_flag)])
    try:
        url = f"http://127.0.0.1:{http_flag}"

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "peer started from TOML")
        cluster = httpx.get(url + "/v1/cluster").json()
        assert cluster["self"] == "solo" and cluster["config"]["n"] == 1
        httpx.put(url + "/v1/files/toml", content=b"ok").raise_for_status()
        assert httpx.get(url + "/v1/files/toml").content == b"ok"
    finally:
        peer.signal(15)
        if peer.process is not None:
            peer.process.wait(15)
    for bad, key in [("colour = 1\n", "colour"), ('replicas = "many"\n', "replicas")]:
        config.write_text(
            f'name = "solo"\ndata = "{tmp_path / "d2"}"\nport = 7000\nhttp = 8000\n{bad}'
        )
        refused = subprocess.run(
            [*launcher.qfs_command(), "peer", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 2 and key in refused.stderr, refused.stderr
