"""Clocks and version counters on real `qfs peer` processes: a crafted version context, and a
peer whose wall clock is stepped back and forward by an hour while it runs (libfaketime).

libfaketime moves only the wall clock here (FAKETIME_DONT_FAKE_MONOTONIC), as a real clock
step (an operator, a bad NTP server) does: the monotonic clock keeps going.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import httpx
import pytest

from peer.versions import decode_version
from tests.support import LocalCluster, running_cluster, wait_for

FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), Path())


def context_text(entries: dict[str, int]) -> str:
    """An X-Qfs-Version value for a clock of `entries`, as a hostile client would build it."""
    raw = cbor2.dumps(entries, canonical=True)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def counter(version: str, node_id: str) -> int:
    return decode_version(version).entries.get(node_id, 0)


def test_a_crafted_huge_context_is_refused_and_later_writes_succeed(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 3) as cluster, httpx.Client(timeout=30) as http:
        url = cluster.peer("p1").http_url
        me = http.get(url + "/v1/cluster").json()["id"]
        first = http.put(url + "/v1/files/f", content=b"one")
        assert first.status_code == 201
        stored = decode_version(first.json()["version"]).entries
        for entries in (
            {me: 2**64 - 2},  # beyond any counter a cluster issues: refused when decoded
            {**stored, me: stored[me] + 1_000},  # beyond what is stored for the key
        ):
            crafted = http.put(
                url + "/v1/files/f",
                content=b"crafted",
                headers={"X-Qfs-Version": context_text(entries)},
            )
            assert crafted.status_code == 400, crafted.text
            assert "X-Qfs-Version" in crafted.json()["detail"]
        later = http.put(url + "/v1/files/f", content=b"two")
        assert later.status_code == 201, later.text
        resolved = http.put(
            url + "/v1/files/f",
            content=b"three",
            headers={"X-Qfs-Version": later.json()["version"]},
        )
        assert resolved.status_code == 201
        assert http.get(cluster.peer("p2").http_url + "/v1/files/f").content == b"three"


@contextlib.contextmanager
def cluster_with_a_stepped_clock(root: Path) -> Iterator[tuple[LocalCluster, Path]]:
    """Four peers; p3 runs under libfaketime, its wall-clock offset read from the returned
    file (written "+0" first, re-read every second)."""
    offset = root / "p3-clock"
    offset.write_text("+0\n")
    cluster = LocalCluster(root, 4, extra=["--dead-after", "120", "--anti-entropy-interval", "0.5"])
    p3 = cluster.peer("p3")
    p3.argv = [
        "env",
        f"LD_PRELOAD={FAKETIME}",
        f"FAKETIME_TIMESTAMP_FILE={offset}",
        "FAKETIME_CACHE_DURATION=1",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
        *p3.argv,
    ]
    try:
        cluster.start()
        yield cluster, offset
    finally:
        cluster.stop()


@pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed")
def test_a_wall_clock_stepped_back_and_forward_an_hour_loses_nothing(tmp_path: Path) -> None:
    with (
        cluster_with_a_stepped_clock(tmp_path) as (cluster, offset),
        httpx.Client(timeout=30) as http,
    ):
        urls = {p.name: p.http_url for p in cluster.peers}
        p3 = http.get(urls["p3"] + "/v1/cluster").json()["id"]
        written: dict[str, bytes] = {}
        counters: list[int] = []

        def put(via: str, path: str, data: bytes) -> str:
            reply = http.put(f"{urls[via]}/v1/files{path}", content=data)
            assert reply.status_code == 201, reply.text
            written[path] = data
            return reply.json()["version"]

        def replicas(via: str, path: str) -> list[str]:
            return http.get(f"{urls[via]}/v1/stat{path}").json()["replicas"]

        def states(observer: str) -> dict[str, str]:
            members = http.get(urls[observer] + "/v1/cluster").json()["members"]
            return {m["name"]: m["state"] for m in members}

        def repair_rounds() -> int:
            return http.get(urls["p3"] + "/v1/cluster").json()["repair"]["anti_entropy_rounds"]

        counters.append(counter(put("p3", "/a", b"a at the true time"), p3))
        for i in range(40):  # a key with p4 among its homes, to watch p4's share of the ring
            watched = f"/k{i}"
            put("p1", watched, b"k")
            if "p4" in replicas("p1", watched):
                break

        offset.write_text("-1h\n")  # p3's wall clock steps back an hour

        def p3_is_an_hour_behind() -> bool:
            put("p3", "/probe", b"probe")
            mtime = http.get(urls["p1"] + "/v1/stat/probe").json()["mtime"]
            return mtime < time.time() - 1800

        wait_for(p3_is_an_hour_behind, 10, "p3's wall clock an hour behind")
        rounds = repair_rounds()
        wait_for(lambda: repair_rounds() >= rounds + 3, 10, "p3's timers running an hour back")
        counters.append(counter(put("p3", "/b", b"b an hour back"), p3))
        counters.append(counter(put("p3", "/a", b"a rewritten an hour back"), p3))

        cluster.kill("p3", signal.SIGTERM)  # a restart with the clock still an hour back
        cluster.restart("p3")
        counters.append(counter(put("p3", "/c", b"c after the restart"), p3))
        assert counters == sorted(set(counters)), counters  # never repeated, never back

        cluster.kill("p4")
        cluster.wait_state("p3", "p4", "dead", timeout=30)
        offset.write_text("+1h\n")  # and forward two hours, to an hour ahead
        time.sleep(3)  # real seconds for p3's timers to run on the new wall clock
        counters.append(counter(put("p3", "/d", b"d an hour ahead"), p3))
        assert counters == sorted(set(counters)), counters
        # --dead-after 120 has not passed: p4 keeps its share of the ring on p3's view.
        assert "p4" in replicas("p3", watched)
        for observer in ("p1", "p2", "p3"):  # and nobody else was marked dead
            seen = states(observer)
            assert all(seen[name] == "alive" for name in ("p1", "p2", "p3")), (observer, seen)
        for name in ("p1", "p2", "p3"):  # every acknowledged write reads back everywhere
            for path, data in written.items():
                got = http.get(urls[name] + "/v1/files" + path)
                assert got.status_code == 200 and got.content == data, (name, path)
