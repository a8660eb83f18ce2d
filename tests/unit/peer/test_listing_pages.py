"""Paginated directory listings (Coordinator.list_page, record.range after/limit) against real
replicas on a simulated network, including replicas that hold different names."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from peer.body import FileBody
from peer.errors import NotFound
from tests.simnet import run, sim_cluster


@pytest.fixture
def cluster(tmp_path: Path):
    yield from sim_cluster(tmp_path)


def put(coordinator, path: str) -> None:
    run(coordinator.put_file(path, FileBody(io.BytesIO(b"x"))))


def pages(coordinator, directory: str, limit: int) -> list[list[str]]:
    found, after = [], None
    while True:
        entries, after = run(coordinator.list_page(directory, after=after, limit=limit))
        found.append([e["name"] for e in entries])
        if after is None:
            return found


def test_pages_cover_every_name_once_in_order_even_when_replicas_differ(cluster) -> None:
    network, coordinators = cluster(3, n=3, r=2, w=2)
    a = coordinators["n0"]
    names = [f"f{i:02d}" for i in range(20)]
    network.kill("n2")
    for name in names[:10]:
        put(a, "/d/" + name)  # n2 misses these
    network.revive("n2")
    network.kill("n1")
    for name in names[10:]:
        put(a, "/d/" + name)  # n1 misses these
    network.revive("n1")
    listed = pages(coordinators["n2"], "/d", 6)
    assert all(len(page) <= 6 for page in listed)
    assert [n for page in listed for n in page] == names
    assert len(listed) == 4
    run(a.delete_file("/d/f03"))
    flat = [n for page in pages(a, "/d", 5) for n in page]
    assert flat == [n for n in names if n != "f03"]  # a deleted name counts, never shows


def test_one_unpaginated_listing_is_the_whole_directory(cluster) -> None:
    _, coordinators = cluster(3)
    for i in range(7):
        put(coordinators["n0"], f"/e/g{i}")
    entries, following = run(coordinators["n1"].list_page("/e"))
    assert [e["name"] for e in entries] == [f"g{i}" for i in range(7)] and following is None
    with pytest.raises(NotFound):
        run(coordinators["n1"].list_page("/missing", after="x", limit=3))
