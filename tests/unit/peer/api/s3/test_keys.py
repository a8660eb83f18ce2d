"""S3 keys on real replicas over a simulated network: the secret is stored sealed, never in
clear; a key sealed under another admin token is unusable; a revocation is seen by every peer
once its cache entry ages out."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.api.s3.keys import KEY_PREFIX, S3Keys
from peer.errors import BadRequest, NotFound
from tests.simnet import run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_sealed_listed_and_revoked_everywhere(cluster) -> None:
    _, coordinators = cluster(3)
    clock = Clock()
    keys = {name: S3Keys("admin-token", c, clock) for name, c in coordinators.items()}
    made = run(keys["n0"].create({"user": "alice", "groups": ["staff", "b"]}))
    access, secret = made["access_key_id"], made["secret_access_key"]
    for store in keys.values():
        found = run(store.lookup(access))
        assert found is not None and found.secret == secret and found.user == "alice"
        assert found.identity().groups == {"staff", "b"} and not found.identity().admin
    for coordinator in coordinators.values():
        for _, siblings in coordinator.local.records.range(KEY_PREFIX, KEY_PREFIX + "~"):
            assert secret.encode() not in siblings[0].value  # sealed, never in clear
    assert run(keys["n1"].keys()) == [{"id": access, "user": "alice", "groups": ["b", "staff"]}]
    other_token = S3Keys("another-admin-token", coordinators["n2"], clock)
    assert run(other_token.lookup(access)) is None
    run(keys["n0"].revoke(access))
    assert run(keys["n0"].lookup(access)) is None  # at once where it was revoked
    assert run(keys["n2"].lookup(access)) is not None  # elsewhere the cached key, for now
    clock.now += 2.5
    assert all(run(store.lookup(access)) is None for store in keys.values())
    with pytest.raises(NotFound):
        run(keys["n1"].revoke(access))
    assert run(keys["n1"].lookup("not-a-key-id")) is None
    with pytest.raises(BadRequest):
        run(keys["n1"].create({"user": "../x"}))
