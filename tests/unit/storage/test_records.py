"""Record store: sibling merge rule, durability across reopen, ranges, corrupt rows."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from storage.fsutil import StorageFull
from storage.records import RecordCorrupt, RecordStore, Sibling
from storage.vclock import VectorClock


def vc(**entries: int) -> VectorClock:
    return VectorClock(entries)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "records.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[RecordStore]:
    records = RecordStore(db_path)
    yield records
    records.close()


def raw_write(path: Path, key: str, blob: object) -> None:
    """Write a row behind the store's back, as disk corruption or a bad tool would."""
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO records (key, siblings) VALUES (?, ?)", (key, blob))


# --- siblings -----------------------------------------------------------------------------


def test_sibling_tombstone() -> None:
    assert Sibling(vc(a=1), None).tombstone
    assert not Sibling(vc(a=1), b"").tombstone


def test_sibling_validates_types() -> None:
    with pytest.raises(TypeError):
        Sibling({"a": 1}, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sibling(vc(a=1), "text")  # type: ignore[arg-type]


# --- merge rule ---------------------------------------------------------------------------


def test_absent_key(store: RecordStore) -> None:
    assert store.get("nope") == []
    assert store.count() == 0


def test_newer_replaces_older(store: RecordStore) -> None:
    first = Sibling(vc(a=1), b"one")
    second = Sibling(vc(a=2), b"two")
    assert store.put("k", first) == [first]
    assert store.put("k", second) == [second]
    assert store.get("k") == [second]


def test_older_or_equal_changes_nothing(store: RecordStore) -> None:
    current = Sibling(vc(a=2, b=1), b"current")
    store.put("k", current)
    assert store.put("k", Sibling(vc(a=1), b"stale")) == [current]
    assert store.put("k", Sibling(vc(a=2, b=1), b"same clock, other bytes")) == [current]
    assert store.get("k") == [current]


def test_concurrent_writes_become_siblings(store: RecordStore) -> None:
    base = Sibling(vc(a=1), b"base")
    left = Sibling(vc(a=2), b"left")
    right = Sibling(vc(a=1, b=1), b"right")
    store.put("k", base)
    store.put("k", left)
    assert store.put("k", right) == [left, right]
    # A write that has seen both resolves them.
    resolved = Sibling(vc(a=2, b=2), b"resolved")
    assert store.put("k", resolved) == [resolved]


def test_new_sibling_drops_only_what_it_descends(store: RecordStore) -> None:
    left, right = Sibling(vc(a=1), b"l"), Sibling(vc(b=1), b"r")
    store.put("k", left)
    store.put("k", right)
    newer_left = Sibling(vc(a=2), b"l2")
    assert store.put("k", newer_left) == [right, newer_left]


def test_tombstone_is_a_sibling(store: RecordStore) -> None:
    store.put("k", Sibling(vc(a=1), b"v"))
    tomb = Sibling(vc(a=2), None)
    assert store.put("k", tomb) == [tomb]
    assert store.get("k")[0].tombstone
    assert store.count() == 1


def test_put_many_results_in_order(store: RecordStore) -> None:
    s1, s2, s3 = Sibling(vc(a=1), b"1"), Sibling(vc(a=2), b"2"), Sibling(vc(b=1), b"x")
    results = store.put_many([("k", s1), ("k", s2), ("other", s3), ("k", s1)])
    assert results == [[s1], [s2], [s3], [s2]]
    assert store.put_many([]) == []


def test_put_many_validates_before_writing(store: RecordStore) -> None:
    good = ("k", Sibling(vc(a=1), b"v"))
    with pytest.raises(TypeError):
        store.put_many([good, ("j", "not a sibling")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.put_many([good, (7, good[1])])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        store.put_many([good, ("\udcff", good[1])])
    assert store.count() == 0


def test_put_many_is_atomic(store: RecordStore, db_path: Path) -> None:
    raw_write(db_path, "bad", b"\xff\xff")
    with pytest.raises(RecordCorrupt):
        store.put_many([("good", Sibling(vc(a=1), b"v")), ("bad", Sibling(vc(a=1), b"v"))])
    assert store.get("good") == []
    assert store.count() == 1


def test_put_groups_keeps_each_group_atomic_and_apart(store: RecordStore, db_path: Path) -> None:
    raw_write(db_path, "bad", b"\xff\xff")
    s1, s2 = Sibling(vc(a=1), b"1"), Sibling(vc(a=2), b"2")
    outcomes = store.put_groups(
        [
            [("one", s1), ("two", s1)],
            [("three", s1), ("bad", s1)],  # fails on the corrupt row: none of it lands
            [("x", "not a sibling")],  # type: ignore[list-item]
            [],
            [("one", s2)],
        ]
    )
    assert outcomes[0] == [[s1], [s1]]
    assert isinstance(outcomes[1], RecordCorrupt)
    assert isinstance(outcomes[2], TypeError)
    assert outcomes[3] == []
    assert outcomes[4] == [[s2]]
    assert store.get("three") == [] and store.get("x") == []
    assert (store.get("one"), store.get("two")) == ([s2], [s1])


def test_concurrent_puts_from_threads(store: RecordStore) -> None:
    errors: list[BaseException] = []

    def writer(node: str) -> None:
        try:
            clock = VectorClock()
            for i in range(30):
                clock = clock.increment(node)
                store.put(f"{node}/{i % 5}", Sibling(clock, f"{node}{i}".encode()))
                store.put("shared", Sibling(clock, node.encode()))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"n{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 6 * 5 + 1
    # Every writer's last write on "shared" is a concurrent sibling.
    shared = store.get("shared")
    assert sorted(s.value for s in shared) == [f"n{i}".encode() for i in range(6)]
    assert all(s.clock.entries == {s.value.decode(): 30} for s in shared if s.value)
    assert store.get("n3/4") == [Sibling(vc(n3=30), b"n329")]


# --- durability and queries ---------------------------------------------------------------


def test_survives_reopen(db_path: Path) -> None:
    store = RecordStore(db_path)
    store.put("k", Sibling(vc(a=1), b"v"))
    store.put("t", Sibling(vc(a=1), None))
    store.close()
    reopened = RecordStore(db_path)
    assert reopened.get("k") == [Sibling(vc(a=1), b"v")]
    assert reopened.get("t") == [Sibling(vc(a=1), None)]
    reopened.close()


def test_wal_mode(store: RecordStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_delete(store: RecordStore) -> None:
    store.put("k", Sibling(vc(a=1), None))
    assert store.delete("k") is True
    assert store.get("k") == []
    assert store.delete("k") is False
    # A purged key accepts any clock again.
    assert store.put("k", Sibling(vc(a=1), b"new")) == [Sibling(vc(a=1), b"new")]


def test_delete_if_deletes_only_what_was_checked(store: RecordStore) -> None:
    checked = store.put("k", Sibling(vc(a=1), None))
    store.put("k", Sibling(vc(a=2), b"written after the check"))
    assert store.delete_if("k", lambda current: current == checked) is False
    assert store.get("k") == [Sibling(vc(a=2), b"written after the check")]
    assert store.delete_if("k", lambda current: True) is True
    assert store.get("k") == []
    assert store.delete_if("k", lambda current: True) is False  # absent


def test_delete_if_rolls_back_when_the_check_fails(store: RecordStore) -> None:
    store.put("k", Sibling(vc(a=1), b"v"))

    def broken(current: list[Sibling]) -> bool:
        raise RuntimeError("check failed")

    with pytest.raises(RuntimeError):
        store.delete_if("k", broken)
    assert store.get("k") == [Sibling(vc(a=1), b"v")]
    store.put("j", Sibling(vc(a=1), b"the store still writes"))
    assert store.get("j")


def test_range_and_keys(store: RecordStore) -> None:
    keys = [f"d/{i:04d}" for i in range(600)] + ["a", "e", "d", "d0", "é", "\U0001f600", "d/"]
    store.put_many((k, Sibling(vc(a=1), k.encode())) for k in keys)
    assert store.count() == len(keys)
    for prefix in ("d/", "d", "é", "zzz"):
        assert store.count(prefix) == sum(k.startswith(prefix) for k in keys), prefix
    assert list(store.keys()) == sorted(keys)
    assert list(store.keys("d/")) == sorted(k for k in keys if k.startswith("d/"))
    assert list(store.keys("zzz")) == []
    got = list(store.range("d/0100", "d/0400"))
    assert [k for k, _ in got] == [f"d/{i:04d}" for i in range(100, 400)]
    assert got[0][1] == [Sibling(vc(a=1), b"d/0100")]
    assert [k for k, _ in store.range("e")] == ["e", "é", "\U0001f600"]
    assert [k for k, _ in store.range(end="d")] == ["a"]
    assert list(store.range("b", "b")) == []


def test_closed_store_refuses(db_path: Path) -> None:
    store = RecordStore(db_path)
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.get("k")
    with pytest.raises(ValueError, match="closed"):
        store.put("k", Sibling(vc(a=1), b"v"))


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match=str(path)):
        RecordStore(path)


# --- corrupt rows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\xfe garbage",
        b"",
        cbor2.dumps([]),
        cbor2.dumps({"a": 1}),
        cbor2.dumps([[{"a": 1}]]),
        cbor2.dumps([[{"a": -1}, b"v"]]),
        cbor2.dumps([[{"a": 1}, "text, not bytes"]]),
        cbor2.dumps([[["a", 1], b"v"]]),
        "a text value",
        42,
    ],
    ids=repr,
)
def test_corrupt_row_is_a_clear_error(store: RecordStore, db_path: Path, blob: object) -> None:
    raw_write(db_path, "broken/key", blob)
    store.put("fine", Sibling(vc(a=1), b"v"))
    with pytest.raises(RecordCorrupt, match="'broken/key'") as info:
        store.get("broken/key")
    assert isinstance(info.value, ValueError)
    assert info.value.key == "broken/key"
    with pytest.raises(RecordCorrupt):
        store.put("broken/key", Sibling(vc(a=5), b"v"))
    with pytest.raises(RecordCorrupt):
        list(store.range())
    assert store.get("fine") == [Sibling(vc(a=1), b"v")]  # the rest is unharmed
    assert list(store.keys()) == ["broken/key", "fine"]
    assert store.delete("broken/key")  # the way out: purge, then repair from a replica
    assert store.put("broken/key", Sibling(vc(a=5), b"v")) == [Sibling(vc(a=5), b"v")]


def test_a_full_database_fails_the_batch_clearly_and_recovers(store: RecordStore) -> None:
    """SQLite's "database or disk is full" (here from max_page_count, the same SQLITE_FULL a
    full disk gives) fails every write of the batch as StorageFull, never as a lost savepoint;
    reads keep working and writes resume once there is room."""
    store.put("kept", Sibling(vc(a=1), b"v"))
    pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count={pages}")
    big = [(f"k{i}", Sibling(vc(a=1), b"x" * 3000)) for i in range(20)]
    with pytest.raises(StorageFull, match="database or disk is full"):
        store.put_many(big)
    outcomes = store.put_groups([big, [("small", Sibling(vc(a=1), b"y"))]])
    assert all(isinstance(outcome, StorageFull) for outcome in outcomes)
    assert store.get("kept") == [Sibling(vc(a=1), b"v")]
    assert store.get("k0") == [] and store.get("small") == []
    store._conn().execute("PRAGMA max_page_count=1000000")
    assert store.put_many(big)[0] == [Sibling(vc(a=1), b"x" * 3000)]


# --- what changed (anti-entropy's digest cache) ----------------------------------------------


def test_take_changes_names_each_key_written_or_deleted_since_the_last_call(
    store: RecordStore,
) -> None:
    assert store.take_changes() is None  # what was there before opening is not known
    store.put_many([("a", Sibling(vc(n=1), b"1")), ("b", Sibling(vc(n=1), b"2"))])
    store.put("c", Sibling(vc(n=1), b"3"))
    assert store.take_changes() == {"a", "b", "c"}
    assert store.take_changes() == set()
    store.delete("a")
    store.delete("absent")
    store.delete_if("b", lambda current: True)
    store.delete_if("c", lambda current: False)
    assert store.take_changes() == {"a", "b"}


def test_a_write_that_failed_is_not_a_change(store: RecordStore) -> None:
    store.take_changes()
    groups = [[("ok", Sibling(vc(n=1), b"1"))], [("bad", "not a sibling")]]  # type: ignore[list-item]
    outcomes = store.put_groups(groups)  # type: ignore[arg-type]
    assert isinstance(outcomes[1], Exception)
    assert store.take_changes() == {"ok"}


def test_past_max_tracked_changes_it_says_read_everything(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.records.MAX_TRACKED_CHANGES", 3)
    store.take_changes()
    store.put_many([(f"k{i}", Sibling(vc(n=1), b"x")) for i in range(4)])
    assert store.take_changes() is None
    store.put("k9", Sibling(vc(n=1), b"x"))
    assert store.take_changes() == {"k9"}


def test_get_many_reads_present_keys_across_pages(store: RecordStore) -> None:
    store.put_many([(f"k{i:04}", Sibling(vc(n=i + 1), b"v")) for i in range(600)])
    found = store.get_many([f"k{i:04}" for i in range(0, 700, 2)] + ["k0000"])
    assert sorted(found) == [f"k{i:04}" for i in range(0, 600, 2)]
    assert found["k0010"] == [Sibling(vc(n=11), b"v")]
