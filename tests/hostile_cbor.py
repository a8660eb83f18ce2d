"""Hypothesis strategies for hostile CBOR, shared by the fuzz tests of every decoder of bytes
from outside: plain values of the accepted subset, value-sharing bombs (tags 28/29), deep
nesting, tagged values, and mutations of valid encodings."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

import cbor2
from hypothesis import strategies as st

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=32)
)
plain_values = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def sharing_bomb(levels: int, leaf: Any = "x", wrap: Callable[[Any], Any] = lambda v: v) -> bytes:
    """A DAG whose every level holds the one below twice, written with shared references:
    ~6 bytes a level, 2**levels leaves once expanded."""
    value: Any = [leaf]
    for _ in range(levels):
        value = [value, value]
    return cbor2.dumps(wrap(value), value_sharing=True)


sharing_bombs = st.builds(
    sharing_bomb,
    st.integers(8, 40),
    LEAVES,
    st.sampled_from(
        [
            lambda v: v,
            lambda v: {"n": v},  # a vector clock's counter
            lambda v: [1, "gossip.gossip", {"from": "a", "u": [[v]]}],  # a datagram's update
            lambda v: {"size": 1, "blocks": [v]},  # a manifest's block list
        ]
    ),
)
nesting_bombs = st.builds(
    lambda depth, opener: opener * depth + b"\x00",
    st.integers(33, 100_000),
    st.sampled_from([b"\x81", b"\xa1\x61a", b"\x9f", b"\xd8\x1c\x81"]),
)
tagged_values = st.builds(
    lambda tag, value: cbor2.dumps(cbor2.CBORTag(tag, value)),
    st.integers(0, 2**64 - 1),
    plain_values,
)
hostile_bytes = sharing_bombs | nesting_bombs | tagged_values


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Any] = plain_values) -> bytes:
    """A valid encoding with a few bytes flipped, inserted or cut."""
    data = bytearray(cbor2.dumps(draw(values)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[position:position] = bytes([draw(st.integers(0, 255))])
        else:
            del data[position:]
    return bytes(data)


def cpu_of(call: Callable[[], object]) -> float:
    """CPU seconds one call takes, whatever it raises (the cyclic GC held off meanwhile: a full
    collection of the test process's garbage is not the decoder's cost)."""
    gc.disable()
    try:
        started = time.process_time()
        with contextlib.suppress(Exception):
            call()
        return time.process_time() - started
    finally:
        gc.enable()
