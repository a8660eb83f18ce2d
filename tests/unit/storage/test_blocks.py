"""Block stores: one contract suite run against the disk and memory implementations."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import storage.blocks
from storage.blocks import (
    DIRECT_READ_MIN,
    BlockCorrupt,
    BlockError,
    BlockNotFound,
    BlockStats,
    BlockStore,
    BlockUnreadable,
    DiskBlockStore,
    HashMismatch,
    MemoryBlockStore,
    block_hash,
)
from storage.fsutil import StorageFull

HELLO = b"hello, blocks"
HELLO_HASH = block_hash(HELLO)


@dataclass
class Subject:
    store: BlockStore
    corrupt: Callable[[str], None]  # flip a bit in the stored copy of a block


def flip_on_disk(root: Path) -> Callable[[str], None]:
    def corrupt(hash: str) -> None:
        path = root / hash[:2] / hash
        path.chmod(0o644)
        data = bytearray(path.read_bytes() or b"\0")
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    return corrupt


@pytest.fixture(params=["disk", "memory"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "disk":
        return Subject(DiskBlockStore(tmp_path / "blocks"), flip_on_disk(tmp_path / "blocks"))
    memory = MemoryBlockStore()
    return Subject(memory, memory.corrupt)


@pytest.fixture
def store(subject: Subject) -> BlockStore:
    return subject.store


BAD_HASHES = [
    "",
    "../../../etc/passwd",
    "../" + "a" * 61,
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "g" * 64,
    "a" * 64 + "\n",
    "/" + "a" * 63,
    "ab/" + "a" * 61,
    " " + "a" * 63,
    None,
    b"a" * 64,
    64,
]


# --- contract -----------------------------------------------------------------------------


def test_block_hash_is_blake3_hex() -> None:
    assert block_hash(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert len(HELLO_HASH) == 64


def test_put_get_round_trip(store: BlockStore) -> None:
    assert store.put(HELLO) == HELLO_HASH
    assert store.get(HELLO_HASH) == HELLO
    assert store.has(HELLO_HASH)
    assert store.size(HELLO_HASH) == len(HELLO)


def test_put_accepts_bytes_like(store: BlockStore) -> None:
    assert store.put(memoryview(bytearray(HELLO))) == HELLO_HASH
    assert store.get(HELLO_HASH) == HELLO


def test_empty_block(store: BlockStore) -> None:
    empty = store.put(b"")
    assert store.get(empty) == b""
    assert store.size(empty) == 0


def test_put_is_idempotent(store: BlockStore) -> None:
    store.put(HELLO)
    assert store.put(HELLO, HELLO_HASH) == HELLO_HASH
    assert store.stats() == BlockStats(count=1, bytes=len(HELLO), quarantined=0)


def test_expected_hash_mismatch_stores_nothing(store: BlockStore) -> None:
    other = block_hash(b"other")
    with pytest.raises(HashMismatch) as info:
        store.put(HELLO, other)
    assert isinstance(info.value, BlockError)
    assert other in str(info.value) and HELLO_HASH in str(info.value)
    assert not store.has(HELLO_HASH) and not store.has(other)
    assert list(store.hashes()) == []


def test_missing_block(store: BlockStore) -> None:
    with pytest.raises(BlockNotFound) as info:
        store.get(HELLO_HASH)
    assert isinstance(info.value, BlockError)
    assert HELLO_HASH in str(info.value)
    assert not store.has(HELLO_HASH)
    assert store.size(HELLO_HASH) is None
    assert store.delete(HELLO_HASH) is False


@pytest.mark.parametrize("bad", BAD_HASHES, ids=repr)
def test_malformed_hashes_rejected(store: BlockStore, bad: object) -> None:
    for call in (store.get, store.has, store.size, store.delete):
        with pytest.raises(ValueError, match="malformed block hash"):
            call(bad)  # type: ignore[arg-type]
    if bad is not None:  # None means "no expected hash"
        with pytest.raises(ValueError, match="malformed block hash"):
            store.put(HELLO, bad)  # type: ignore[arg-type]
    assert list(store.hashes()) == []


def test_delete(store: BlockStore) -> None:
    store.put(HELLO)
    assert store.delete(HELLO_HASH) is True
    assert not store.has(HELLO_HASH)
    assert store.delete(HELLO_HASH) is False
    assert store.stats() == BlockStats(0, 0, 0)


def test_hashes_and_stats(store: BlockStore) -> None:
    blobs = [bytes([i]) * (i + 1) for i in range(40)]
    expected = {store.put(b) for b in blobs}
    assert set(store.hashes()) == expected
    assert store.stats() == BlockStats(40, sum(len(b) for b in blobs), 0)


def test_corruption_is_quarantined(subject: Subject) -> None:
    store = subject.store
    store.put(HELLO)
    keep = store.put(b"untouched")
    subject.corrupt(HELLO_HASH)
    with pytest.raises(BlockCorrupt) as info:
        store.get(HELLO_HASH)
    assert isinstance(info.value, BlockError)
    assert info.value.hash == HELLO_HASH
    assert not store.has(HELLO_HASH)
    assert list(store.hashes()) == [keep]
    assert store.quarantined() == [HELLO_HASH]
    assert store.stats() == BlockStats(1, len(b"untouched"), 1)
    with pytest.raises(BlockNotFound):
        store.get(HELLO_HASH)
    # A good copy (e.g. from another replica) heals it.
    assert store.put(HELLO) == HELLO_HASH
    assert store.get(HELLO_HASH) == HELLO
    assert store.quarantined() == [HELLO_HASH]


def test_concurrent_puts(store: BlockStore) -> None:
    blobs = [os.urandom(1000) for _ in range(16)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(len(blobs)):
                blob = blobs[(i + offset) % len(blobs)]
                assert store.put(blob) == block_hash(blob)
                assert store.get(block_hash(blob)) == blob
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(store.hashes()) == {block_hash(b) for b in blobs}
    assert store.stats() == BlockStats(16, 16 * 1000, 0)


# --- disk specifics -----------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskBlockStore]:
    yield DiskBlockStore(tmp_path / "blocks")


def test_disk_layout(disk: DiskBlockStore) -> None:
    disk.put(HELLO)
    path = disk.root / HELLO_HASH[:2] / HELLO_HASH
    assert path.read_bytes() == HELLO
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert os.listdir(disk.root / "incoming") == []


def test_disk_put_existing_does_not_rewrite(disk: DiskBlockStore) -> None:
    disk.put(HELLO)
    path = disk.root / HELLO_HASH[:2] / HELLO_HASH
    before = path.stat()
    disk.put(HELLO)
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_disk_wrong_size_copy_is_replaced_on_put(disk: DiskBlockStore) -> None:
    disk.put(HELLO)
    path = disk.root / HELLO_HASH[:2] / HELLO_HASH
    path.chmod(0o644)
    path.write_bytes(HELLO[:3])  # e.g. truncated by a faulty disk
    assert disk.put(HELLO) == HELLO_HASH
    assert disk.get(HELLO_HASH) == HELLO
    assert disk.quarantined() == [HELLO_HASH]
    assert disk.stats() == BlockStats(1, len(HELLO), 1)


def test_disk_quarantine_keeps_the_bad_copy_and_survives_reopen(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    store = DiskBlockStore(root)
    store.put(HELLO)
    flip_on_disk(root)(HELLO_HASH)
    with pytest.raises(BlockCorrupt) as info:
        store.get(HELLO_HASH)
    moved = info.value.quarantined_path
    assert moved is not None and moved.parent == root / "quarantine"
    assert moved.read_bytes() != HELLO and len(moved.read_bytes()) == len(HELLO)
    assert str(moved) in str(info.value)
    reopened = DiskBlockStore(root)
    assert reopened.quarantined() == [HELLO_HASH]
    assert reopened.stats() == BlockStats(0, 0, 1)


def test_disk_stats_count_existing_blocks_after_reopen(tmp_path: Path) -> None:
    DiskBlockStore(tmp_path / "b", fsync=False).put(HELLO)
    reopened = DiskBlockStore(tmp_path / "b", fsync=False)
    assert reopened.stats() == BlockStats(1, len(HELLO), 0)
    reopened.put(b"more")
    assert reopened.stats() == BlockStats(2, len(HELLO) + 4, 0)


def test_disk_open_wipes_incoming(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    DiskBlockStore(root)
    (root / "incoming" / f"{HELLO_HASH}.dead.tmp").write_bytes(HELLO[:4])
    DiskBlockStore(root)
    assert os.listdir(root / "incoming") == []


def test_disk_ignores_stray_files(disk: DiskBlockStore) -> None:
    disk.put(HELLO)
    (disk.root / "00" / "notes.txt").write_text("stray")
    (disk.root / "00" / HELLO_HASH).write_bytes(HELLO)  # right name, wrong fan-out folder
    assert list(disk.hashes()) == [HELLO_HASH]
    assert DiskBlockStore(disk.root).stats().count == 1


def test_disk_without_fsync_keeps_the_contract(tmp_path: Path) -> None:
    store = DiskBlockStore(tmp_path / "b", fsync=False)
    assert store.get(store.put(HELLO)) == HELLO


def test_touch_and_last_used(store: BlockStore) -> None:
    missing = block_hash(b"never stored")
    assert store.last_used(missing) is None
    assert store.touch(missing) is False
    before = time.time()
    stored = store.put(b"used")
    first = store.last_used(stored)
    assert first is not None and first >= before - 2
    assert store.touch(stored) is True
    assert store.last_used(stored) >= first
    assert store.get(stored) == b"used"
    store.delete(stored)
    assert store.last_used(stored) is None


def test_a_copy_is_dated_by_its_age_and_a_stored_block_keeps_its_time(store: BlockStore) -> None:
    copied = store.put(b"copied from a peer", age=3600.0)
    assert abs(store.age(copied) - 3600.0) < 5
    assert abs(store.last_used(copied) - (time.time() - 3600.0)) < 5
    store.put(b"copied from a peer", age=7200.0)  # already here: its own time stays
    assert abs(store.age(copied) - 3600.0) < 5
    assert store.touch(copied)
    assert store.age(copied) < 5
    assert store.age(block_hash(b"never stored")) is None


# --- direct I/O ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [1, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 5],
)
def test_disk_durable_puts_keep_every_byte(tmp_path: Path, size: int) -> None:
    """Direct writes (and reads, from 64 KiB) cover the block-aligned bulk and buffered ones
    the tail; every byte lands and comes back."""
    store = DiskBlockStore(tmp_path / "blocks")
    data = os.urandom(size)
    stored = store.put(data)
    assert (store.root / stored[:2] / stored).read_bytes() == data
    assert DiskBlockStore(tmp_path / "blocks").get(stored) == data


def refuse_direct_io(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every switch to direct I/O fail as a file system without it does (EINVAL); the
    list collects the descriptors refused."""
    refusals: list[int] = []

    def no_direct_io(fd: int, on: bool) -> None:
        if on:
            refusals.append(fd)
            raise OSError(errno.EINVAL, "direct I/O not supported")

    monkeypatch.setattr("storage.blocks._set_direct", no_direct_io)
    return refusals


def test_disk_without_direct_io_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = refuse_direct_io(monkeypatch)
    store = DiskBlockStore(tmp_path / "blocks")
    first, second = os.urandom(3 * 4096 + 7), os.urandom(1 << 20)
    assert store.get(store.put(first)) == first
    assert store.get(store.put(second)) == second
    assert len(refusals) == 1  # the store stops asking after the first refusal
    assert os.listdir(store.root / "incoming") == []


def test_disk_reads_large_blocks_past_the_page_cache_and_small_ones_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DiskBlockStore(tmp_path / "blocks")
    small, large = os.urandom(DIRECT_READ_MIN - 1), os.urandom(DIRECT_READ_MIN + 4096 + 3)
    stored = store.put(small), store.put(large)
    switched = []
    real = storage.blocks._set_direct

    def recording(fd: int, on: bool) -> None:
        switched.append(on)
        real(fd, on)

    monkeypatch.setattr("storage.blocks._set_direct", recording)
    assert store.get(stored[0]) == small
    assert switched == []
    assert store.get(stored[1]) == large
    assert switched == [True, False]


def test_disk_reads_fall_back_to_the_page_cache_where_direct_io_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DiskBlockStore(tmp_path / "blocks")
    data = os.urandom(1 << 20)
    stored = store.put(data)
    refusals = refuse_direct_io(monkeypatch)
    assert store.get(stored) == data
    assert store.get(stored) == data
    assert len(refusals) == 1


def test_disk_store_on_tmpfs_without_direct_io_keeps_every_byte() -> None:
    """tmpfs (the chaos suite's small disks) has no O_DIRECT: the real refusal is handled."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as root:
        store = DiskBlockStore(Path(root) / "blocks")
        data = os.urandom((1 << 20) + 5)
        assert store.get(store.put(data)) == data
        assert DiskBlockStore(Path(root) / "blocks").get(block_hash(data)) == data


def test_disk_write_errors_other_than_no_direct_io_fail_the_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, data: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("storage.blocks._write_all", disk_full)
    store = DiskBlockStore(tmp_path / "blocks")
    data = os.urandom(8192)
    with pytest.raises(StorageFull, match=f"no space for block {block_hash(data)}"):
        store.put(data)
    assert not store.has(block_hash(data))
    assert os.listdir(store.root / "incoming") == []
    monkeypatch.undo()  # space is back: the same store takes the block
    assert store.get(store.put(data)) == data


def test_disk_read_error_is_a_block_error_and_moves_the_copy_away(tmp_path: Path) -> None:
    """A copy the kernel refuses to read (here a directory where the file was: EISDIR, an
    OSError like EIO) is BlockUnreadable, quarantined, and can be stored again."""
    store = DiskBlockStore(tmp_path / "blocks")
    stored = store.put(HELLO)
    path = store.root / stored[:2] / stored
    path.chmod(0o644)
    path.unlink()
    path.mkdir()
    with pytest.raises(BlockUnreadable) as info:
        store.get(stored)
    assert isinstance(info.value, BlockError)
    assert isinstance(info.value.error, OSError)
    assert info.value.quarantined_path is not None
    assert not store.has(stored)
    assert store.quarantined() == [stored]
    with pytest.raises(BlockNotFound):
        store.get(stored)
    assert store.get(store.put(HELLO)) == HELLO


def test_disk_passing_read_errors_leave_the_copy_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors is no fault of the copy: BlockUnreadable, but nothing quarantined."""
    store = DiskBlockStore(tmp_path / "blocks")
    stored = store.put(HELLO)

    def out_of_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr("builtins.open", out_of_descriptors)
    with pytest.raises(BlockUnreadable) as info:
        store.get(stored)
    assert info.value.quarantined_path is None
    monkeypatch.undo()
    assert store.quarantined() == [] and store.get(stored) == HELLO
