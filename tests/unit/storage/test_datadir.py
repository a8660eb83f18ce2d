"""Data directory: lock, stable node id, stores wired in."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from storage.blocks import DiskBlockStore
from storage.datadir import DataDir, DataDirLocked
from storage.fsutil import SpaceReserve
from storage.records import RecordStore, Sibling
from storage.vclock import VectorClock


def test_first_open_creates_layout(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "data"
    with DataDir(path) as data:
        assert data.path == path
        assert re.fullmatch(r"[0-9a-f]{32}", data.node_id)
        assert (path / "node_id").read_text() == data.node_id + "\n"
        assert (path / "LOCK").read_text() == f"{os.getpid()}\n"
        assert isinstance(data.blocks, DiskBlockStore)
        assert isinstance(data.records, RecordStore)
        assert (path / "blocks" / "incoming").is_dir()
        assert (path / "records.sqlite").exists()
        assert repr(data.node_id) in repr(data)


def test_node_id_is_kept_and_data_persists(tmp_path: Path) -> None:
    with DataDir(tmp_path) as data:
        node_id = data.node_id
        block = data.blocks.put(b"block")
        data.records.put("k", Sibling(VectorClock({node_id: 1}), b"v"))
    with DataDir(tmp_path) as again:
        assert again.node_id == node_id
        assert again.blocks.get(block) == b"block"
        assert again.records.get("k") == [Sibling(VectorClock({node_id: 1}), b"v")]


def test_distinct_dirs_get_distinct_ids(tmp_path: Path) -> None:
    with DataDir(tmp_path / "a") as a, DataDir(tmp_path / "b") as b:
        assert a.node_id != b.node_id


def test_second_owner_is_refused(tmp_path: Path) -> None:
    with DataDir(tmp_path) as data:
        with pytest.raises(DataDirLocked) as info:
            DataDir(tmp_path)
        message = str(info.value)
        assert str(tmp_path) in message and str(os.getpid()) in message
        assert data.records.count() == 0  # the owner is unharmed
        assert (tmp_path / "LOCK").read_text() == f"{os.getpid()}\n"
    with DataDir(tmp_path):  # released on close
        pass


def test_locked_without_a_known_pid(tmp_path: Path) -> None:
    with DataDir(tmp_path):
        (tmp_path / "LOCK").write_text("")
        with pytest.raises(DataDirLocked, match="another process"):
            DataDir(tmp_path)


def test_close_is_idempotent(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    data.close()
    data.close()
    with pytest.raises(ValueError, match="closed"):
        data.records.get("k")


def test_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "LOCK").write_text("999999\n")  # left by a dead process
    with DataDir(tmp_path) as data:
        assert data.node_id


def test_node_id_without_newline_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("0123456789abcdef0123456789abcdef")
    with DataDir(tmp_path) as data:
        assert data.node_id == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "content",
    [b"", b"xyz\n", b"0123456789ABCDEF0123456789ABCDEF\n", b"0" * 31, b"0" * 33, b"\xff" * 32],
    ids=repr,
)
def test_malformed_node_id_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "node_id").write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "node_id"))):
        DataDir(tmp_path)
    assert (tmp_path / "node_id").read_bytes() == content  # not silently replaced
    (tmp_path / "node_id").unlink()
    with DataDir(tmp_path):  # the failed open released the lock
        pass


def test_corrupt_record_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "records.sqlite").write_bytes(b"garbage" * 1000)
    with pytest.raises(ValueError, match=r"records\.sqlite"):
        DataDir(tmp_path)
    (tmp_path / "records.sqlite").unlink()
    with DataDir(tmp_path):
        pass


def test_the_counter_mark_only_grows_and_survives_reopen(tmp_path: Path) -> None:
    with DataDir(tmp_path) as data:
        assert data.counter_mark.value == 0
        data.counter_mark.store(1_000)
        data.counter_mark.store(500)  # never lowered
        data.counter_mark.store(2_000)
        assert data.counter_mark.value == 2_000
    with DataDir(tmp_path) as again:
        assert again.counter_mark.value == 2_000


def test_a_torn_counter_mark_write_keeps_the_previous_mark(tmp_path: Path) -> None:
    with DataDir(tmp_path) as data:
        data.counter_mark.store(1_000)
        data.counter_mark.store(2_000)
        size = (tmp_path / "counter_mark").stat().st_size
    raw = bytearray((tmp_path / "counter_mark").read_bytes())
    raw[size // 2 + 3] ^= 0xFF  # the slot written last (2_000) is torn
    (tmp_path / "counter_mark").write_bytes(bytes(raw))
    with DataDir(tmp_path) as again:
        assert again.counter_mark.value == 1_000
        again.counter_mark.store(3_000)  # overwrites the torn slot, keeps the good one
    with DataDir(tmp_path) as third:
        assert third.counter_mark.value == 3_000


def test_a_counter_mark_with_no_good_copy_refuses_to_open(tmp_path: Path) -> None:
    with DataDir(tmp_path):
        pass
    (tmp_path / "counter_mark").write_bytes(b"\xff" * 24)
    with pytest.raises(ValueError, match="counter_mark"):
        DataDir(tmp_path)
    (tmp_path / "counter_mark").unlink()
    with DataDir(tmp_path):  # the lock was released by the failed open
        pass


def test_the_counter_mark_is_written_in_place(tmp_path: Path) -> None:
    """No new file or block per mark: the mark still moves when the disk is full."""
    with DataDir(tmp_path) as data:
        inode = (tmp_path / "counter_mark").stat().st_ino
        data.counter_mark.store(7)
        assert (tmp_path / "counter_mark").stat().st_ino == inode
        assert not (tmp_path / "counter_mark.tmp").exists()

def modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under `root` (and of `root` as "."), by relative path."""
    found = {".": root.stat().st_mode & 0o7777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o7777
    return found


@pytest.fixture
def open_umask():
    """A umask of 0, so only the modes the code asks for count."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_no_other_local_user_can_read_anything_of_the_data_directory(
    tmp_path: Path, open_umask
) -> None:
    path = tmp_path / "data"
    with DataDir(path, fsync=False) as data:
        block = data.blocks.put(b"a file's contents")
        data.records.put("k", Sibling(VectorClock({"a": 1}), b"metadata"))
        found = modes(path)
    assert found[f"blocks/{block[:2]}/{block}"] == 0o400
    for name in (".", "blocks", "blocks/00", "blocks/incoming", "blocks/quarantine"):
        assert found[name] == 0o700, name
    for name in ("node_id", "LOCK", "records.sqlite", "records.sqlite-wal"):
        assert found[name] == 0o600, name
    assert not [name for name, mode in found.items() if mode & 0o077], found


def test_a_data_directory_left_readable_is_tightened_on_open(tmp_path: Path, open_umask) -> None:
    path = tmp_path / "data"
    with DataDir(path, fsync=False):
        pass
    for name in modes(path):
        os.chmod(path / name, 0o755 if (path / name).is_dir() else 0o644)  # as older versions
    with DataDir(path, fsync=False):
        found = modes(path)
    assert not [name for name, mode in found.items() if mode & 0o077], found


def test_the_space_reserve_is_held_given_up_and_taken_again(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "reserve")
    assert reserve.keep() and reserve.path.stat().st_size > 0
    assert reserve.path.stat().st_mode & 0o777 == 0o600
    assert reserve.keep()  # held already
    assert reserve.release() and not reserve.path.exists()
    assert not reserve.release()
    assert reserve.keep()


def test_the_space_reserve_is_taken_again_by_several_threads_at_once(tmp_path: Path) -> None:
    """Collection sweeps served at once each take the reserve again in a worker thread.
    Before: their writes shared one temporary file, and one found it renamed away by the
    other (CI's disk-full scenario: 'gc.sweep failed', FileNotFoundError on reserve.tmp)."""
    reserve = SpaceReserve(tmp_path / "reserve")
    reserve.size = 64 * 1024
    together = threading.Barrier(4)
    errors: list[BaseException] = []

    def sweeps() -> None:
        try:
            for _ in range(10):
                together.wait()
                reserve.release()
                together.wait()
                assert reserve.keep()
        except BaseException as e:  # reported below
            errors.append(e)
            together.abort()

    threads = [threading.Thread(target=sweeps) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert reserve.path.stat().st_size == 64 * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reserve"]
