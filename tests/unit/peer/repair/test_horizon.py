"""The horizon's pure rules: who is known, who is forgotten, and whose data is stale."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.repair.horizon import MAX_STATE_BYTES, HorizonState, Known, Seen


def test_every_peer_gossip_shows_is_known_and_absence_accumulates() -> None:
    state = HorizonState()
    assert state.observe([Seen("a", "p1", True), Seen("b", "p2", False)], 0.0, 100.0) == []
    assert set(state.known) == {"a", "b"}
    assert state.away() == {"b": 0.0}  # down when first seen: away, blocks purges
    state.observe([Seen("a", "p1", True), Seen("b", "p2", False)], 30.0, 100.0)
    assert state.away() == {"b": 30.0}
    state.observe([Seen("a", "p1", True), Seen("b", "p2", True)], 30.0, 100.0)
    assert state.away() == {}
    assert state.known["b"] == Known("p2", 0.0)  # back: the count starts again


def test_a_peer_away_past_the_horizon_is_forgotten() -> None:
    state = HorizonState()
    state.observe([Seen("a", "p1", True), Seen("b", "p2", True)], 0.0, 100.0)
    state.observe([Seen("a", "p1", True)], 60.0, 100.0)  # reaped from gossip, still known
    assert state.away() == {"b": 60.0}
    forgotten = state.observe([Seen("a", "p1", True)], 41.0, 100.0)
    assert [f.node_id for f in forgotten] == ["b"]
    assert "horizon" in forgotten[0].reason
    assert "b" not in state.known and state.away() == {}
    state.observe([Seen("a", "p1", True), Seen("b", "p2", False)], 1.0, 100.0)
    assert "b" not in state.known, "gossip still listing a forgotten peer as dead relearns it"
    state.observe([Seen("a", "p1", True), Seen("b", "p2", True)], 1.0, 100.0)
    assert state.known["b"] == Known("p2", 0.0)  # seen up again: known again (and rebuilt)


def test_a_new_node_id_under_a_known_name_supersedes_the_old_at_once() -> None:
    state = HorizonState()
    state.observe([Seen("old", "p3", True)], 0.0, 100.0)
    forgotten = state.observe([Seen("old", "p3", False), Seen("new", "p3", True)], 1.0, 100.0)
    assert [(f.node_id, f.name) for f in forgotten] == [("old", "p3")]
    assert "superseded" in forgotten[0].reason
    assert set(state.known) == {"new"}


def test_data_is_stale_when_it_predates_a_sweep() -> None:
    state = HorizonState(accounted=4, swept=3)
    assert not state.stale_against(4)
    assert state.stale_against(5)


def test_the_persisted_form_round_trips_and_bad_forms_are_refused() -> None:
    state = HorizonState(7, 6, {"a": Known("p1", 2.5)}, filling=True, forgotten={"z"})
    again = HorizonState.decode(state.encode())
    assert (again.accounted, again.swept, again.known, again.filling) == (7, 6, state.known, True)
    assert again.forgotten == {"z"}
    for bad, what in [
        (b"[]", "object"),
        (b'{"accounted": -1, "swept": 0, "known": {}}', "round numbers"),
        (b'{"accounted": 1, "swept": 0, "known": {"a": "p1"}}', "known peer"),
        (b'{"accounted": 1, "swept": 0, "known": {}, "filling": 1}', "filling"),
        (b"\xff", "not JSON"),
        (b" " * (MAX_STATE_BYTES + 1), "bytes"),
    ]:
        with pytest.raises(ValueError, match=what):
            HorizonState.decode(bad)


@given(st.binary(max_size=300))
def test_decoding_any_bytes_gives_a_state_or_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        HorizonState.decode(data)
