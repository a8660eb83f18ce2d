"""Namespace operations (mkdir, rmdir, move, copy, chmod) and permission checks against real
replicas on the simulated network of test_coordinator_sim: deterministic, no reactor."""

from __future__ import annotations

import pytest

from peer.coordinator import Coordinator
from peer.errors import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    Unavailable,
)
from peer.namespace import Namespace
from peer.permissions import Identity
from peer.versions import decode_version
from tests.unit.peer.test_coordinator_sim import cluster, get, put, run

__all__ = ["cluster"]  # the fixture, used by name

ALICE = Identity("alice", frozenset({"staff"}))
BOB = Identity("bob", frozenset({"dev"}))


def names(coordinator: Coordinator, directory: str, **kw) -> list[str]:
    return [e["name"] for e in run(coordinator.list_directory(directory, **kw))]


def test_mkdir_and_rmdir_of_empty_and_nested_directories_seen_from_every_peer(cluster) -> None:
    _network, coordinators = cluster(4)
    ns = Namespace(coordinators["n0"])
    run(ns.mkdir("/empty"))
    run(ns.mkdir("/a/b/c", parents=True))
    for c in coordinators.values():
        assert names(c, "/") == ["a", "empty"]
        assert names(c, "/empty") == []
        assert names(c, "/a/b") == ["c"]
        assert run(c.stat("/a/b"))["type"] == "dir"
    entry = run(coordinators["n3"].list_directory("/a"))[0]
    assert (entry["type"], entry["mode"], entry["owner"]) == ("dir", "0755", "admin")
    with pytest.raises(AlreadyExists):
        run(ns.mkdir("/empty"))
    run(ns.mkdir("/empty", parents=True))  # mkdir -p of an existing directory succeeds
    with pytest.raises(NotFound, match="parents"):
        run(ns.mkdir("/x/y"))
    run(Namespace(coordinators["n2"]).rmdir("/empty"))
    with pytest.raises(NotEmpty):
        run(ns.rmdir("/a"))
    run(ns.rmdir("/a", recursive=True))
    for c in coordinators.values():
        assert names(c, "/") == []
        with pytest.raises(NotFound):
            run(c.list_directory("/a/b"))
    run(ns.mkdir("/a/b", parents=True))  # re-created after removal: real clocks, not constants
    assert names(coordinators["n1"], "/a") == ["b"]
    assert names(coordinators["n1"], "/a/b") == []
    with pytest.raises(BadRequest):
        run(ns.rmdir("/"))


def test_a_file_and_a_directory_never_share_a_path(cluster) -> None:
    _network, coordinators = cluster(3)
    ns = Namespace(coordinators["n0"])
    put(coordinators["n0"], "/f", b"file")
    with pytest.raises(AlreadyExists, match="file"):
        run(ns.mkdir("/f"))
    with pytest.raises(NotADirectory):
        run(ns.mkdir("/f/g", parents=True))
    with pytest.raises(NotADirectory):
        put(coordinators["n1"], "/f/g", b"below a file")
    run(ns.mkdir("/d"))
    with pytest.raises(IsADirectory):
        put(coordinators["n1"], "/d", b"over a directory")
    with pytest.raises(IsADirectory):
        run(coordinators["n1"].delete_file("/d"))
    with pytest.raises(NotADirectory):
        run(ns.rmdir("/f"))


def test_concurrent_creates_of_one_directory_both_survive_as_one_directory(cluster) -> None:
    network, coordinators = cluster(3, r=1, w=1)
    network.kill("n1")
    network.kill("n2")
    run(Namespace(coordinators["n0"]).mkdir("/same"))
    network.revive("n2")
    network.kill("n0")
    run(Namespace(coordinators["n2"]).mkdir("/same/x", parents=True))  # n2 did not see /same
    network.revive("n0")
    network.revive("n1")
    found = run(coordinators["n1"].lookup("/same", 3))
    assert len(found.entry) == 2  # concurrent creates of one name: two live siblings
    assert names(coordinators["n1"], "/", r=3) == ["same"]
    assert names(coordinators["n1"], "/same", r=3) == ["x"]


def test_a_put_after_another_peer_removed_the_directory_recreates_it(cluster) -> None:
    """No peer caches directories: a put re-reads the entries above it and re-creates any
    that were removed, so the file is listed from the root."""
    _network, coordinators = cluster(3)
    put(coordinators["n0"], "/d/a", b"1")
    run(Namespace(coordinators["n1"]).rmdir("/d", recursive=True))
    put(coordinators["n0"], "/d/b", b"2")
    assert names(coordinators["n2"], "/") == ["d"]
    assert names(coordinators["n2"], "/d") == ["b"]


def test_move_and_copy_of_a_file_share_blocks(cluster) -> None:
    network, coordinators = cluster(3)
    data = bytes(range(256)) * 64  # 4 blocks
    put(coordinators["n0"], "/src/f", data, mode=0o640)
    ns = Namespace(coordinators["n1"])
    network.calls.clear()
    run(ns.transfer("/src/f", "/dst/g", move=False))
    run(ns.transfer("/src/f", "/moved/f", move=True))
    assert "block.put" not in {method for _, method in network.calls}
    assert get(coordinators["n2"], "/dst/g") == data
    assert get(coordinators["n2"], "/moved/f") == data
    with pytest.raises(NotFound):
        get(coordinators["n2"], "/src/f")
    assert run(coordinators["n2"].stat("/moved/f"))["mode"] == "0640"
    assert names(coordinators["n0"], "/src") == []
    with pytest.raises(NotFound):
        run(ns.transfer("/src/f", "/other", move=True))
    with pytest.raises(AlreadyExists):
        run(ns.transfer("/dst/g", "/moved/f", move=False))
    run(ns.transfer("/dst/g", "/moved/f", move=True, overwrite=True))
    with pytest.raises(BadRequest, match="into itself"):
        run(ns.transfer("/moved", "/moved/inner", move=True))


def test_directory_move_and_copy_with_a_subdirectory(cluster) -> None:
    network, coordinators = cluster(4)
    files = {f"/tree/f{i:03}": f"content {i}".encode() * (i % 3 + 1) for i in range(200)}
    files["/tree/sub/deep"] = b"deep" * 2000
    for path, data in files.items():
        put(coordinators["n0"], path, data)
    ns = Namespace(coordinators["n1"], batch=7)
    network.calls.clear()
    run(ns.transfer("/tree", "/copy", move=False))
    run(ns.transfer("/tree", "/moved", move=True))
    assert "block.put" not in {method for _, method in network.calls}
    reader = coordinators["n3"]
    for path, data in files.items():
        assert get(reader, path.replace("/tree", "/copy")) == data
        assert get(reader, path.replace("/tree", "/moved")) == data
        with pytest.raises(NotFound):
            get(reader, path)
    assert names(reader, "/") == ["copy", "moved"]
    assert len(names(reader, "/moved")) == 201
    with pytest.raises(AlreadyExists):
        run(ns.transfer("/copy", "/moved", move=True))


def test_a_directory_move_cut_short_leaves_every_file_somewhere_and_rerunning_finishes(
    cluster,
) -> None:
    _network, coordinators = cluster(3)
    files = {f"/big/f{i:03}": f"{i}".encode() for i in range(50)}
    for path, data in files.items():
        put(coordinators["n0"], path, data)
    coordinator = coordinators["n1"]
    writes = []
    real = coordinator.write_records

    async def failing(groups, w, what):
        writes.append(what)
        if len(writes) == 7:  # mkdir, 2 batches, the 3rd batch's destinations, then it dies
            raise Unavailable("the coordinator died")
        await real(groups, w, what)

    coordinator.write_records = failing  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        run(Namespace(coordinator, batch=10).transfer("/big", "/new", move=True))
    reader = coordinators["n2"]
    old, new = set(names(reader, "/big")), set(names(reader, "/new"))
    assert len(old) == 30 and len(new) == 30
    assert len(old & new) == 10  # the third batch reached its destinations only: at both
    assert old | new == {p.rsplit("/", 1)[1] for p in files}
    for path, data in files.items():
        name = path.rsplit("/", 1)[1]
        assert get(reader, (path if name in old else f"/new/{name}")) == data
    run(Namespace(coordinators["n0"], batch=10).transfer("/big", "/new", move=True))
    assert names(reader, "/") == ["new"]
    assert len(names(reader, "/new")) == 50
    stat = run(reader.lookup("/new", 2))
    assert stat.directory().attrs_from.moving_from is None


def test_chmod_racing_with_a_content_write_loses_neither(cluster) -> None:
    _network, coordinators = cluster(3)
    first = put(coordinators["n0"], "/r", b"v1")
    seen = decode_version(first["version"])
    run(Namespace(coordinators["n1"]).set_attrs("/r", mode=0o600))
    put(coordinators["n2"], "/r", b"v2", context=seen)  # did not see the chmod: a sibling
    assert get(coordinators["n0"], "/r") == b"v2"
    stat = run(coordinators["n0"].stat("/r"))
    assert stat["mode"] == "0600"
    listing = run(coordinators["n1"].list_directory("/"))
    assert listing[0]["mode"] == "0600" and "conflict" not in listing[0]
    put(coordinators["n0"], "/r", b"v3")  # the next write folds the siblings
    assert run(coordinators["n2"].stat("/r"))["mode"] == "0600"


def test_permissions_of_files_and_directories(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    put(c, "/a.txt", b"alice's", identity=ALICE)
    assert run(c.stat("/a.txt"))["owner"] == "alice"
    assert get_as(c, "/a.txt", BOB) == b"alice's"
    with pytest.raises(Forbidden, match="write"):
        put(c, "/a.txt", b"bob's", identity=BOB)
    with pytest.raises(Forbidden, match="mode"):
        run(ns.set_attrs("/a.txt", mode=0o666, identity=BOB))
    with pytest.raises(Forbidden, match="sticky"):
        run(c.delete_file("/a.txt", identity=BOB))
    with pytest.raises(Forbidden):
        run(ns.transfer("/a.txt", "/b.txt", move=True, identity=BOB))
    run(ns.set_attrs("/a.txt", mode=0o600, identity=ALICE))
    with pytest.raises(Forbidden, match="read"):
        get_as(c, "/a.txt", BOB)
    with pytest.raises(Forbidden, match="read"):
        run(ns.transfer("/a.txt", "/b.txt", move=False, identity=BOB))
    assert get(c, "/a.txt") == b"alice's"  # the admin
    with pytest.raises(Forbidden, match="owner"):
        run(ns.set_attrs("/a.txt", owner="bob", identity=ALICE))
    run(ns.set_attrs("/a.txt", owner="bob"))
    assert get_as(c, "/a.txt", BOB) == b"alice's"
    run(ns.mkdir("/home/alice", parents=True, identity=ALICE))
    run(ns.set_attrs("/home/alice", mode=0o700, identity=ALICE))
    put(c, "/home/alice/open", b"x", mode=0o644, identity=ALICE)
    with pytest.raises(Forbidden, match="search"):
        get_as(c, "/home/alice/open", BOB)
    with pytest.raises(Forbidden):
        run(c.list_directory("/home/alice", identity=BOB))
    with pytest.raises(Forbidden):
        put(c, "/home/alice/new", b"x", identity=BOB)
    assert run(c.list_directory("/home", identity=BOB))[0]["mode"] == "0700"
    entry = run(c.list_directory("/home/alice", identity=ALICE))[0]
    assert (entry["owner"], entry["group"]) == ("alice", "admin")  # group from the parent


def get_as(coordinator: Coordinator, path: str, identity: Identity) -> bytes:
    resolved = run(coordinator.resolve(path, None, None, identity))

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in coordinator.stream(resolved.manifest)])

    return run(collect())


def test_put_over_a_file_keeps_owner_and_group(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    put(c, "/shared", b"1", mode=0o666, identity=ALICE)
    put(c, "/shared", b"2", mode=0o600, identity=BOB)  # not the owner: the mode stays
    stat = run(c.stat("/shared"))
    assert (stat["owner"], stat["mode"]) == ("alice", "0666")
    assert run(c.resolve("/shared", None, None, BOB)).manifest.size == 1
    put(c, "/blob", b"x", mode=0o640)
    assert run(c.stat("/blob"))["mode"] == "0640"


def attrs_of(coordinator: Coordinator, path: str) -> tuple[str, str, str]:
    stat = run(coordinator.stat(path))
    return stat["owner"], stat["group"], stat["mode"]


def home_of_alice(c: Coordinator) -> None:
    """/alice (alice's, 0700) with notes.txt, and bob's /bobdir holding a notes.txt too."""
    ns = Namespace(c)
    run(ns.mkdir("/alice", identity=ALICE))
    run(ns.set_attrs("/alice", mode=0o700, identity=ALICE))
    put(c, "/alice/notes.txt", b"alice's notes", identity=ALICE)
    run(ns.mkdir("/bobdir", identity=BOB))
    put(c, "/bobdir/notes.txt", b"bob overwrote this", identity=BOB)


@pytest.mark.parametrize("move", [False, True])
def test_copy_or_move_over_another_users_directory_is_refused_and_changes_nothing(
    cluster, move: bool
) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    home_of_alice(c)
    with pytest.raises(Forbidden, match="/alice"):
        run(Namespace(c).transfer("/bobdir", "/alice", move=move, overwrite=True, identity=BOB))
    assert attrs_of(c, "/alice") == ("alice", "admin", "0700")
    assert get(c, "/alice/notes.txt") == b"alice's notes"
    assert get(c, "/bobdir/notes.txt") == b"bob overwrote this"


def test_overwriting_files_keeps_their_attributes_and_needs_w_and_the_sticky_rule(
    cluster,
) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    run(ns.mkdir("/pub", identity=ALICE))
    run(ns.set_attrs("/pub", mode=0o777, identity=ALICE))
    put(c, "/pub/shared", b"alice", mode=0o666, identity=ALICE)
    put(c, "/pub/readonly", b"alice", mode=0o644, identity=ALICE)
    put(c, "/top-shared", b"alice", mode=0o666, identity=ALICE)  # in the sticky root
    put(c, "/bobfile", b"bob", identity=BOB)
    run(ns.transfer("/bobfile", "/pub/shared", move=False, overwrite=True, identity=BOB))
    assert get(c, "/pub/shared") == b"bob"
    assert attrs_of(c, "/pub/shared") == ("alice", "admin", "0666")
    with pytest.raises(Forbidden, match="write"):
        run(ns.transfer("/bobfile", "/pub/readonly", move=False, overwrite=True, identity=BOB))
    with pytest.raises(Forbidden, match="sticky"):
        run(ns.transfer("/bobfile", "/top-shared", move=True, overwrite=True, identity=BOB))
    assert get(c, "/top-shared") == b"alice" and get(c, "/bobfile") == b"bob"
    # A directory merged into keeps its attributes; the files in it are written into.
    run(ns.mkdir("/bobdir", identity=BOB))
    put(c, "/bobdir/shared", b"bob again", mode=0o600, identity=BOB)
    put(c, "/bobdir/new", b"new", identity=BOB)
    run(ns.transfer("/bobdir", "/pub", move=True, overwrite=True, identity=BOB))
    assert attrs_of(c, "/pub") == ("alice", "admin", "0777")
    assert attrs_of(c, "/pub/shared") == ("alice", "admin", "0666")
    assert get(c, "/pub/shared") == b"bob again"
    assert attrs_of(c, "/pub/new")[0] == "bob"


def test_merging_into_a_subdirectory_needs_w_and_x_on_it(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    run(ns.mkdir("/pub/private", parents=True, identity=ALICE))
    run(ns.set_attrs("/pub", mode=0o777, identity=ALICE))
    run(ns.set_attrs("/pub/private", mode=0o755, identity=ALICE))
    put(c, "/pub/private/diary", b"alice", mode=0o666, identity=ALICE)
    put(c, "/bobdir/private/diary", b"bob", identity=BOB)
    with pytest.raises(Forbidden, match="/pub/private"):
        run(ns.transfer("/bobdir", "/pub", move=False, overwrite=True, identity=BOB))
    assert get(c, "/pub/private/diary") == b"alice"
    assert attrs_of(c, "/pub/private") == ("alice", "admin", "0755")


def test_a_move_takes_nothing_out_of_a_subdirectory_the_caller_may_not_change(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    run(ns.mkdir("/bobdir", identity=BOB))
    run(ns.set_attrs("/bobdir", mode=0o777, identity=BOB))
    run(ns.mkdir("/bobdir/a", identity=ALICE))
    run(ns.set_attrs("/bobdir/a", mode=0o755, identity=ALICE))
    put(c, "/bobdir/a/f", b"alice", identity=ALICE)
    with pytest.raises(Forbidden, match="/bobdir/a"):
        run(ns.transfer("/bobdir", "/elsewhere", move=True, identity=BOB))
    assert get(c, "/bobdir/a/f") == b"alice"


def test_recursive_rmdir_applies_the_sticky_bit_at_every_level(cluster) -> None:
    _network, coordinators = cluster(3)
    c = coordinators["n0"]
    ns = Namespace(c)
    run(ns.mkdir("/top", identity=BOB))
    run(ns.set_attrs("/top", mode=0o777, identity=BOB))
    run(ns.mkdir("/top/drop", identity=ALICE))
    run(ns.set_attrs("/top/drop", mode=0o1777, identity=ALICE))
    put(c, "/top/drop/a.txt", b"alice", identity=ALICE)
    put(c, "/top/drop/b.txt", b"bob", identity=BOB)
    with pytest.raises(Forbidden, match="sticky"):
        run(ns.rmdir("/top", recursive=True, identity=BOB))
    assert get(c, "/top/drop/a.txt") == b"alice"
    assert get(c, "/top/drop/b.txt") == b"bob"  # checked before anything was removed
    run(ns.rmdir("/top", recursive=True))  # the admin
    assert names(c, "/") == []
