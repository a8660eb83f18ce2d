"""Pure namespace rules: permission checks, attribute changes and the merge of metadata-only
siblings."""

from __future__ import annotations

import pytest

from peer.errors import BadRequest, Forbidden
from peer.manifest import Attrs, Entry, Manifest, merge_versions
from peer.permissions import (
    ADMIN_IDENTITY,
    EXECUTE,
    READ,
    WRITE,
    Identity,
    allows,
    changed_attrs,
    check_name,
    new_attrs,
    parse_mode,
    require_remove,
    require_replace,
    require_traverse,
)
from storage.vclock import VectorClock

ALICE = Identity("alice", frozenset({"staff"}))
BOB = Identity("bob", frozenset({"staff"}))
EVE = Identity("eve", frozenset({"other"}))


@pytest.mark.parametrize(
    ("who", "mode", "want", "expected"),
    [
        (ALICE, 0o600, READ | WRITE, True),
        (ALICE, 0o066, READ, False),  # the owner gets the owner bits, even if others have more
        (BOB, 0o640, READ, True),
        (BOB, 0o640, WRITE, False),
        (EVE, 0o640, READ, False),
        (EVE, 0o644, READ, True),
        (EVE, 0o751, EXECUTE, True),
        (ADMIN_IDENTITY, 0o000, READ | WRITE | EXECUTE, True),
    ],
)
def test_owner_group_other_bits(who: Identity, mode: int, want: int, expected: bool) -> None:
    assert allows(who, Attrs("alice", "staff", mode), want) is expected


def test_traversal_needs_x_on_every_ancestor() -> None:
    open_dir, closed = Attrs("alice", "staff", 0o755), Attrs("alice", "staff", 0o750)
    require_traverse(EVE, [("/", open_dir), ("/a", open_dir)])
    with pytest.raises(Forbidden, match="/b"):
        require_traverse(EVE, [("/", open_dir), ("/b", closed)])


def test_removal_needs_w_and_x_on_the_directory_and_respects_the_sticky_bit() -> None:
    mine = Attrs("alice", "staff", 0o644)
    require_remove(BOB, "/d", Attrs("root", "staff", 0o775), "/d/f", mine)
    with pytest.raises(Forbidden, match="write"):
        require_remove(EVE, "/d", Attrs("root", "staff", 0o775), "/d/f", mine)
    sticky = Attrs("root", "staff", 0o1777)
    require_remove(ALICE, "/", sticky, "/f", mine)
    with pytest.raises(Forbidden, match="sticky"):
        require_remove(BOB, "/", sticky, "/f", mine)
    require_remove(ADMIN_IDENTITY, "/", sticky, "/f", mine)


def test_replacing_a_file_needs_w_on_it_and_the_sticky_rule_not_w_on_the_directory() -> None:
    shared = Attrs("alice", "staff", 0o666)
    closed_dir = Attrs("alice", "staff", 0o755)
    require_replace(EVE, "/d", closed_dir, "/d/f", shared)  # like cp onto a writable file
    with pytest.raises(Forbidden, match="write"):
        require_replace(EVE, "/d", closed_dir, "/d/f", Attrs("alice", "staff", 0o644))
    sticky = Attrs("root", "staff", 0o1777)
    with pytest.raises(Forbidden, match=r"sticky.*replace"):
        require_replace(EVE, "/tmp", sticky, "/tmp/f", shared)
    require_replace(ALICE, "/tmp", sticky, "/tmp/f", shared)
    require_replace(ADMIN_IDENTITY, "/tmp", sticky, "/tmp/f", Attrs("alice", "staff", 0))


def test_who_changes_mode_owner_and_group() -> None:
    current = Attrs("alice", "staff", 0o644)
    assert changed_attrs(ALICE, current, "/f", mode=0o600).mode == 0o600
    with pytest.raises(Forbidden, match="mode"):
        changed_attrs(BOB, current, "/f", mode=0o600)
    with pytest.raises(Forbidden, match="owner"):
        changed_attrs(ALICE, current, "/f", owner="bob")
    assert changed_attrs(ADMIN_IDENTITY, current, "/f", owner="bob").owner == "bob"
    with pytest.raises(Forbidden, match="group"):
        changed_attrs(ALICE, current, "/f", group="other")
    assert changed_attrs(Identity("alice", frozenset({"x"})), current, "/f", group="x").group == "x"
    assert changed_attrs(BOB, current, "/f", mode=0o644) == current  # no change: no check


def test_new_entries_take_the_parent_group() -> None:
    assert new_attrs(ALICE, Attrs("root", "projects", 0o2775), 0o640) == Attrs(
        "alice", "projects", 0o640
    )


def test_names_and_modes_are_validated() -> None:
    assert parse_mode("0640") == 0o640
    for bad in ["", "9", "0o644", "77777", 644, None]:
        with pytest.raises(BadRequest):
            parse_mode(bad)
    assert check_name("user", "alice.b@x") == "alice.b@x"
    for bad in ["", "-x", "a b", "é", "x" * 65, 3]:
        with pytest.raises(BadRequest):
            check_name("user", bad)


def manifest(content: str, mode: int, mtime: float = 1.0, **clocks: VectorClock) -> Manifest:
    return Manifest(0, mtime, mode, content, (), b"", **clocks)


def test_a_chmod_sibling_merges_into_a_concurrent_content_write() -> None:
    base = VectorClock({"a": 1})
    content = VectorClock({"a": 2})  # a content write that did not see the chmod
    chmod = VectorClock({"a": 1, "b": 1})
    merged = merge_versions(
        [
            (content, manifest("v2", 0o644, attrs_clock=base)),
            (chmod, manifest("v1", 0o600, content_clock=base)),
        ]
    )
    assert [m.blake3 for _, m in merged.heads] == ["v2"]
    assert merged.attrs_from.mode == 0o600
    assert merged.attrs_clock == chmod


def test_concurrent_contents_stay_a_conflict_and_concurrent_chmods_pick_one() -> None:
    one, two = VectorClock({"a": 2}), VectorClock({"a": 1, "b": 1})
    merged = merge_versions([(one, manifest("x", 0o644)), (two, manifest("y", 0o600, 2.0))])
    assert sorted(m.blake3 for _, m in merged.heads) == ["x", "y"]
    base = VectorClock({"a": 1})
    chmods = [
        (one, manifest("x", 0o640, 5.0, content_clock=base)),
        (two, manifest("x", 0o600, 3.0, content_clock=base)),
    ]
    for versions in (chmods, chmods[::-1]):
        merged = merge_versions(versions)
        assert len(merged.heads) == 1
        assert merged.attrs_from.mode == 0o640  # the later one, whatever the order


def test_entries_round_trip_with_attributes_clocks_and_move_marks() -> None:
    entry = Entry.directory(Attrs("alice", "staff", 0o750), 2.0, moving_from="/old")
    assert Entry.decode(entry.encode()) == entry
    file_entry = Entry.of_file(manifest("h", 0o600, content_clock=VectorClock({"a": 1})))
    assert Entry.decode(file_entry.encode()) == file_entry
