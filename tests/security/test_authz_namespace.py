"""Authorization probes of issue 17 against three real `qfs peer` processes with tokens on:
taking over another user's directory or file with one copy or move, the sticky bit inside a
recursive rmdir, and the content hashes a stat shows to someone who may not read the file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import LocalCluster, running_cluster

ADMIN = secrets.token_urlsafe(24)


class User:
    """One token's view of the HTTP API of one peer."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def put(self, path: str, data: bytes, mode: str = "0644") -> None:
        answer = self.http.put(f"/v1/files{path}", content=data, params={"mode": mode})
        assert answer.status_code == 201, answer.text

    def read(self, path: str) -> bytes:
        answer = self.http.get(f"/v1/files{path}")
        assert answer.status_code == 200, answer.text
        return answer.content

    def mkdir(self, path: str, mode: str) -> None:
        assert self.http.put(f"/v1/dirs{path}").status_code == 201
        assert self.http.patch(f"/v1/stat{path}", json={"mode": mode}).status_code == 200

    def stat(self, path: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/stat{path}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def transfer(self, verb: str, source: str, dest: str) -> httpx.Response:
        body = {"from": source, "to": dest, "overwrite": True}
        return self.http.post(f"/v1/{verb}", json=body)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("authz")
    token_file = root / "admin.token"
    token_file.write_text(ADMIN)
    token_file.chmod(0o600)
    with running_cluster(root, 3, ["--admin-token-file", str(token_file)], ADMIN) as running:
        yield running


@pytest.fixture(scope="module")
def users(cluster: LocalCluster) -> dict[str, User]:
    admin = User(cluster.peer("p1").http_url, ADMIN)
    found = {}
    for name, peer in (("alice", "p1"), ("bob", "p2")):
        created = admin.http.post("/v1/tokens", json={"user": name, "groups": [name]})
        assert created.status_code == 201, created.text
        found[name] = User(cluster.peer(peer).http_url, created.json()["token"])
    return found


def test_bob_cannot_take_over_alices_directory_by_copying_or_moving_over_it(users) -> None:
    alice, bob = users["alice"], users["bob"]
    alice.mkdir("/alice", "0700")
    alice.put("/alice/notes.txt", b"alice's notes")
    bob.mkdir("/bobdir", "0755")
    bob.put("/bobdir/notes.txt", b"bob overwrote this")
    for verb in ("copy", "move"):
        refused = bob.transfer(verb, "/bobdir", "/alice")
        assert refused.status_code == 403, (verb, refused.text)
        assert "/alice" in refused.json()["detail"]
    stat = alice.stat("/alice")
    assert (stat["owner"], stat["group"], stat["mode"]) == ("alice", "admin", "0700")
    assert alice.read("/alice/notes.txt") == b"alice's notes"
    assert bob.read("/bobdir/notes.txt") == b"bob overwrote this"


def test_overwriting_a_file_bob_may_write_keeps_alices_owner_and_mode(users) -> None:
    alice, bob = users["alice"], users["bob"]
    alice.mkdir("/pub", "0777")
    alice.put("/pub/shared", b"alice", mode="0666")
    alice.put("/top-shared", b"alice", mode="0666")  # in the sticky root
    for verb, content in (("copy", b"bob's copy"), ("move", b"bob's move")):
        bob.put("/pub/bobfile", content, mode="0600")
        assert bob.transfer(verb, "/pub/bobfile", "/pub/shared").is_success
        stat = alice.stat("/pub/shared")
        assert (stat["owner"], stat["mode"]) == ("alice", "0666"), verb
        assert alice.read("/pub/shared") == content
        refused = bob.transfer(verb, "/pub/shared", "/top-shared")
        assert refused.status_code == 403 and "sticky" in refused.json()["detail"]
    assert alice.read("/top-shared") == b"alice"


def test_recursive_rmdir_honours_a_sticky_directory_below(users) -> None:
    alice, bob = users["alice"], users["bob"]
    bob.mkdir("/top", "0777")
    alice.mkdir("/top/drop", "1777")
    alice.put("/top/drop/a.txt", b"alice's")
    refused = bob.http.delete("/v1/dirs/top", params={"recursive": "1"})
    assert refused.status_code == 403 and "sticky" in refused.json()["detail"]
    assert alice.read("/top/drop/a.txt") == b"alice's"


def test_stat_shows_content_hashes_only_to_who_may_read(users) -> None:
    alice, bob = users["alice"], users["bob"]
    alice.put("/private.bin", secrets.token_bytes(8192), mode="0600")  # a block, not inline
    mine = alice.stat("/private.bin")
    assert len(mine["blake3"]) == 64 and all(len(b["hash"]) == 64 for b in mine["blocks"])
    theirs = bob.stat("/private.bin")
    assert "blake3" not in theirs and theirs["blocks"]
    assert all("hash" not in block for block in theirs["blocks"])
    assert (theirs["size"], theirs["owner"], theirs["mode"]) == (8192, "alice", "0600")
