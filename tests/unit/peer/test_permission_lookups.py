"""The lookups behind permission checks: quorum floor, unknown ancestors, merged attributes of
versions and what a stat shows without r. Pure rules first, then on the simulated cluster of
test_coordinator_sim (real replicas, no reactor)."""

from __future__ import annotations

import blake3
import pytest

from peer.errors import Forbidden, Unavailable
from peer.lookup import Lookup, permission_quorum
from peer.manifest import ROOT_ATTRS, Attrs, Entry, Manifest, entry_key
from peer.namespace import Namespace
from peer.paths import parent
from peer.permissions import Identity
from peer.versions import encode_version
from storage.records import Sibling
from storage.vclock import VectorClock
from tests.unit.peer.test_coordinator_sim import cluster, get, put, run

__all__ = ["cluster"]  # the fixture, used by name

ALICE = Identity("alice", frozenset({"staff"}))
BOB = Identity("bob", frozenset({"dev"}))
OPEN = Attrs("alice", "staff", 0o755)


def test_a_permission_lookup_reads_at_least_the_cluster_r_unless_an_admin_asks() -> None:
    assert permission_quorum(1, 2, admin=False) == 2
    assert permission_quorum(3, 2, admin=False) == 3
    assert permission_quorum(1, 2, admin=True) == 1


def entry(attrs: Attrs) -> list[Sibling]:
    return [Sibling(VectorClock({"n": 1}), Entry.directory(attrs, 1.0).encode())]


def file_manifest() -> list[Sibling]:
    manifest = Manifest(1, 1.0, 0o644, blake3.blake3(b"x").hexdigest(), inline=b"x")
    return [Sibling(VectorClock({"n": 1}), manifest.encode())]


def test_a_missing_ancestor_is_unknown_where_an_entry_must_be() -> None:
    ancestors = [("/a", []), ("/a/b", entry(OPEN)), ("/a/b/c", [])]
    # Creating /a/b/c/d: /a is missing above an existing /a/b, /a/b/c is made by the creation.
    creating = Lookup("/a/b/c/d", [], [], ancestors)
    assert creating.traversed() == [("/", ROOT_ATTRS), ("/a", None), ("/a/b", OPEN)]
    assert creating.container() == ("/a/b", OPEN)
    # A file that exists below a missing ancestor: every missing one is unknown.
    existing = Lookup("/a/b/c/d", file_manifest(), [], ancestors)
    assert existing.traversed()[-1] == ("/a/b/c", None)
    # Nothing missing above the deepest existing ancestor: nothing unknown.
    fresh = Lookup("/x/y", [], [], [("/x", [])])
    assert fresh.traversed() == [("/", ROOT_ATTRS)]


def test_below_a_directory_with_no_entry_only_an_admin_reads_or_creates(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    run(ns.mkdir("/alice/pub", parents=True, identity=ALICE))
    run(ns.set_attrs("/alice/pub", mode=0o777, identity=ALICE))
    put(c, "/alice/pub/f", b"alice", mode=0o644, identity=ALICE)
    run(ns.set_attrs("/alice", mode=0o700, identity=ALICE))
    found = run(c.lookup("/alice", 2))
    tombstone = (entry_key("/alice"), Sibling(ns._next(found.entry), None))
    run(c.write_records([(parent("/alice"), [tombstone])], 2, "lose /alice's entry"))
    with pytest.raises(Forbidden, match="/alice has no directory entry"):
        run(c.resolve("/alice/pub/f", None, None, BOB))
    with pytest.raises(Forbidden, match="/alice has no directory entry"):
        put(c, "/alice/pub/bob", b"bob", identity=BOB)  # would recreate /alice as bob's
    assert get(c, "/alice/pub/f") == b"alice"  # the admin


def test_r1_of_a_user_cannot_let_a_stale_replica_decide(cluster) -> None:
    network, coordinators = cluster(3)
    put(coordinators["n0"], "/f", b"secret", mode=0o644, identity=ALICE)
    network.down.add("n2")  # unreachable, not yet known to be down: the chmod misses it
    run(Namespace(coordinators["n0"]).set_attrs("/f", mode=0o600, identity=ALICE))
    network.down = {"n0", "n1"}  # now only n2 answers, with the old mode
    with pytest.raises(Unavailable):
        run(coordinators["n2"].resolve("/f", None, 1, BOB))
    with pytest.raises(Unavailable):
        run(coordinators["n2"].stat("/f", 1, BOB))
    assert run(coordinators["n2"].resolve("/f", None, 1)).manifest.mode == 0o644  # admin


def test_a_version_read_checks_the_merged_attributes_not_the_siblings(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    hashed = {text: blake3.blake3(text).hexdigest() for text in (b"open", b"closed")}
    opened = Manifest(4, 1.0, 0o644, hashed[b"open"], inline=b"open", owner="alice")
    closed = Manifest(6, 2.0, 0o600, hashed[b"closed"], inline=b"closed", owner="alice")
    first, second = VectorClock({"x": 1}), VectorClock({"y": 1})  # concurrent
    writes = c.file_writes("/v", first, opened) + c.file_writes("/v", second, closed)
    run(c.write_records(writes, 2, "two concurrent versions"))
    with pytest.raises(Forbidden, match="read"):
        run(c.resolve("/v", encode_version(first), None, BOB))
    resolved = run(c.resolve("/v", encode_version(first), None, ALICE))
    assert resolved.manifest.mode == 0o600  # the file's mode, whichever sibling is read


def test_stat_without_r_shows_no_content_hashes(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    put(c, "/big", bytes(range(256)) * 64, mode=0o640, identity=ALICE)  # several blocks
    mine = run(c.stat("/big", identity=ALICE))
    assert "blake3" in mine and all("hash" in b for b in mine["blocks"])
    theirs = run(c.stat("/big", identity=BOB))
    assert "blake3" not in theirs and theirs["blocks"]
    assert all(set(b) == {"size", "holders"} for b in theirs["blocks"])
    assert theirs["size"] == mine["size"] and theirs["mode"] == "0640"
