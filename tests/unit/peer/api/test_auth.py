"""Bearer tokens: header parsing, and token records through real replicas on the simulated
network (create, identify, list without secrets, revoke within the cache lifetime)."""

from __future__ import annotations

import pytest

from peer.api.auth import (
    CACHE_SECONDS,
    FAILURE_BURST,
    Authenticator,
    FailureLimiter,
    bearer_token,
    load_admin_token,
)
from peer.errors import BadRequest, NotFound, TooManyRequests, Unauthorized
from peer.permissions import ADMIN_IDENTITY, Identity
from tests.unit.peer.test_coordinator_sim import cluster, run

__all__ = ["cluster"]  # the fixture, used by name

ADMIN = "admin-secret-token"


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "missing"),
        (b"", "malformed"),
        (b"Basic dXNlcjpwYXNz", "malformed"),
        (b"Bearer", "malformed"),
        (b"Bearer a b", "malformed"),
        (b"Bearer \xff\xfe", "not ASCII"),
        ("Bearer ключ".encode(), "not ASCII"),
        (b"Bearer " + b"x" * 5000, "longer than"),
        (b"Bearer \x00abc", "malformed"),
    ],
)
def test_bad_authorization_headers_are_unauthorized(header: bytes | None, why: str) -> None:
    with pytest.raises(Unauthorized, match=why):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token(b"bearer abc.def") == "abc.def"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_created_checked_listed_and_revoked_on_every_peer(cluster) -> None:
    network, coordinators = cluster(3)
    clock = Clock()
    auths = {n: Authenticator(ADMIN, c, clock) for n, c in coordinators.items()}
    assert run(auths["n0"].identify(f"Bearer {ADMIN}".encode())) == ADMIN_IDENTITY
    created = run(auths["n0"].create({"user": "bob", "groups": ["dev", "ops"], "admin": False}))
    header = f"Bearer {created['token']}".encode()
    for auth in auths.values():
        assert run(auth.identify(header)) == Identity("bob", frozenset({"dev", "ops"}))
    listed = run(auths["n2"].tokens())
    assert listed == [
        {"id": created["id"], "user": "bob", "groups": ["dev", "ops"], "admin": False}
    ]
    stored = [
        s.value
        for r in network.replicas.values()
        for _, siblings in r.records.range("t:", "t;")
        for s in siblings
    ]
    secret = created["token"].split("_", 2)[2]  # the secret itself may contain "_"
    assert len(secret) == 43
    assert stored and all(secret.encode() not in v for v in stored)
    wrong = created["token"][:-4] + "AAAA"
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        run(auths["n1"].identify(f"Bearer {wrong}".encode()))
    run(auths["n0"].revoke(created["id"]))
    with pytest.raises(Unauthorized):
        run(auths["n0"].identify(header))  # the revoking peer forgets it at once
    assert run(auths["n1"].identify(header)).user == "bob"  # another peer's cache, < 2 s old
    clock.now += CACHE_SECONDS
    for auth in auths.values():
        with pytest.raises(Unauthorized):
            run(auth.identify(header))
    with pytest.raises(NotFound):
        run(auths["n0"].revoke(created["id"]))
    assert run(auths["n1"].tokens()) == []


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"user": "bad name"},
        {"user": "ok", "groups": "dev"},
        {"user": "ok", "admin": "yes"},
        {"user": "ok", "extra": 1},
    ],
)
def test_bad_token_requests_are_refused(cluster, body) -> None:
    _network, coordinators = cluster(3)
    with pytest.raises(BadRequest):
        run(Authenticator(ADMIN, coordinators["n0"], Clock()).create(body))


def test_an_unusable_admin_token_refuses_to_start(cluster) -> None:
    _network, coordinators = cluster(1, n=1, r=1, w=1)
    for bad in ["", "has space", "x" * 600, "fifteen-chars-x"]:
        with pytest.raises(ValueError, match="admin token"):
            Authenticator(bad, coordinators["n0"], Clock())


def test_an_admin_token_file_others_may_read_is_refused(tmp_path) -> None:
    path = tmp_path / "admin.token"
    path.write_text(ADMIN + "\n")
    for mode in (0o644, 0o640, 0o602):
        path.chmod(mode)
        with pytest.raises(ValueError, match=rf"permissions {mode:04o} are too open.*chmod 600"):
            load_admin_token(path)
    path.chmod(0o600)
    assert load_admin_token(path) == ADMIN
    with pytest.raises(ValueError, match="No such file"):
        load_admin_token(tmp_path / "missing")


def test_failures_drain_a_bucket_per_address_that_refills_with_time() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock, burst=3, refill=2.0, limit=2)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2
    assert limiter.retry_after("10.0.0.2") is None  # another address is not held back
    clock.now += 1.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert limiter.retry_after("10.0.0.1") is None  # one failure earned back, not more
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2
    limiter.failed("10.0.0.2")
    limiter.failed("10.0.0.3")  # past `limit` addresses: the least recently failing goes
    assert limiter.retry_after("10.0.0.1") is None


def test_an_address_that_failed_too_often_gets_429_even_with_the_right_token(cluster) -> None:
    _network, coordinators = cluster(1, n=1, r=1, w=1)
    clock = Clock()
    auth = Authenticator(ADMIN, coordinators["n0"], clock)
    for _ in range(FAILURE_BURST):
        with pytest.raises(Unauthorized):
            run(auth.identify(b"Bearer wrong-guess", "10.0.0.1"))
    with pytest.raises(TooManyRequests) as limited:
        run(auth.identify(f"Bearer {ADMIN}".encode(), "10.0.0.1"))
    assert limited.value.retry_after == 1 and limited.value.to_json()["retry_after"] == 1
    assert run(auth.identify(f"Bearer {ADMIN}".encode(), "10.0.0.2")) == ADMIN_IDENTITY
    with pytest.raises(Unauthorized, match="missing"):  # no guess: answered, not counted
        run(auth.identify(None, "10.0.0.1"))
    assert (auth.failures, auth.limited) == (FAILURE_BURST, 1)
    clock.now += 1.0
    assert run(auth.identify(f"Bearer {ADMIN}".encode(), "10.0.0.1")) == ADMIN_IDENTITY
