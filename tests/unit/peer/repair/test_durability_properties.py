"""Random histories on the simulated network: whatever the order of writes, deletes, peers
leaving, dying and returning, collection rounds and anti-entropy, once everyone is back and
repair has run, every acknowledged write reads back and nothing deleted comes back."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.body import FileBody
from peer.errors import ApiError, NotFound
from tests.simnet import run, sim_cluster
from tests.unit.peer.repair.test_durability_sim import Monotonic, anti_entropy, read, start_jobs

NODES = ["n0", "n1", "n2", "n3"]
PATHS = ["/a", "/b", "/c"]

node = st.sampled_from(NODES)
operation = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(PATHS), node, st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), node),
    st.tuples(st.sampled_from(["die", "leave", "return"]), node),
    st.tuples(st.just("gc"), node),
    st.tuples(st.just("anti-entropy")),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=24))
def test_nothing_acknowledged_is_lost_and_nothing_deleted_returns(history) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fixture = sim_cluster(Path(tmp))
        build = next(fixture)
        try:
            check_history(build, history)
        finally:
            next(fixture, None)


def check_history(build, history) -> None:
    network, coordinators = build(len(NODES))
    jobs = start_jobs(network, coordinators, Monotonic())
    expected: dict[str, bytes | None] = dict.fromkeys(PATHS)
    tainted: set[str] = set()  # a write that was not acknowledged may or may not surface
    for op in history:
        kind = op[0]
        if kind in ("put", "delete"):
            path, via = op[1], op[2]
            if via in network.down:
                continue
            try:
                if kind == "put":
                    data = f"{path} v{op[3]} {len(history)}".encode() * 700
                    body = FileBody(io.BytesIO(data))
                    run(coordinators[via].put_file(path, body))
                    expected[path] = data
                else:
                    run(coordinators[via].delete_file(path))
                    expected[path] = None
            except NotFound:
                assert expected[path] is None or path in tainted
            except ApiError:
                tainted.add(path)
        elif kind in ("die", "leave"):
            if len(network.down) < 1:
                network.kill(op[1])
                network.states[op[1]] = "dead" if kind == "die" else "left"
        elif kind == "return":
            if op[1] in network.down:
                network.revive(op[1])
        elif kind == "gc":
            if op[1] not in network.down:
                run(jobs[op[1]].gc.run_round())
        else:
            anti_entropy(jobs, times=1)
    for down in list(network.down):
        network.revive(down)
    anti_entropy(jobs, times=3)
    for name in NODES:
        run(jobs[name].gc.run_round())
    anti_entropy(jobs, times=3)
    for path in PATHS:
        if path in tainted:
            continue
        for name in NODES:
            assert read(coordinators[name], path) == expected[path], (path, name, history)
