"""Bounded CBOR decoding for bytes from outside: the input is checked before any value is built.

cbor2 resolves several tags itself, before a tag hook ever sees them: value sharing (tags 28/29)
turns a 200-byte input into an exponentially large value, and bignums, dates, regular
expressions and the like build objects no quorumfs message holds. So ``loads`` first walks the
item headers (building nothing, skipping string contents by their length) and refuses anything
outside the plain subset our encoders write; only then does cbor2 build the values, at a cost
linear in the input.

Accepted: integers (at most 64 bits), byte and text strings, arrays, maps whose keys are
distinct text strings, false, true, null and floats, all of definite length. Refused, with
``BadCBOR`` naming what was wrong: every tag, indefinite lengths, other simple values, reserved
encodings, more than ``max_depth`` nested containers, more than ``max_items`` items, a length
that runs past the input, trailing bytes.

gossip and storage may not import each other; this module lives in gossip (the wire codec's
package) and the peer's decoders of outside bytes (version contexts, manifests, directory
entries) use it too. storage decodes only what it wrote itself.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ITEMS = 1 << 20  # ~100 MB of Python objects at worst; a 16 MiB frame's real payload
# Header bytes after the initial byte, by its low five bits (24..31); None: refused.
_HEADER_BYTES: dict[int, struct.Struct | None] = {
    24: struct.Struct(">B"),
    25: struct.Struct(">H"),
    26: struct.Struct(">I"),
    27: struct.Struct(">Q"),
    28: None,
    29: None,
    30: None,
    31: None,
}
_TEXT = 3
_SIMPLE_OK = frozenset((20, 21, 22, 25, 26, 27))  # false, true, null, half/single/double float


class BadCBOR(ValueError):
    """Bytes that are not a CBOR value of the accepted subset; the message says why."""


def excerpt(value: object, limit: int = 32) -> str:
    """A short, escaped rendering of untrusted ``value`` for an error message.

    Text and bytes show at most ``limit`` characters (escaped, so no control character reaches
    a log or a terminal); anything else shows only its type, never its contents.
    """
    if isinstance(value, str):
        return ascii(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value[:limit])
        return ascii(raw) + ("..." if len(value) > limit else "")
    if isinstance(value, bool | int | float) or value is None:
        return ascii(value)[:limit]
    return f"a {type(value).__name__}"


def check(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> None:
    """Raise BadCBOR unless ``data`` is exactly one value of the accepted subset within bounds.

    Walks item headers only: time is linear in the number of items, memory is the depth.
    """
    n = len(data)
    pos = 0
    items = 0
    remaining: list[int] = []  # items still due in each open container
    is_map: list[bool] = []
    while True:
        if pos >= n:
            raise BadCBOR("truncated CBOR: input ends inside a value")
        initial = data[pos]
        pos += 1
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            arg = info
        else:
            size = _HEADER_BYTES[info]
            if size is None:
                if info == 31:
                    raise BadCBOR("indefinite-length CBOR items are not accepted")
                raise BadCBOR(f"reserved CBOR header byte {initial:#04x}")
            if pos + size.size > n:
                raise BadCBOR("truncated CBOR: input ends inside a header")
            (arg,) = size.unpack_from(data, pos)
            pos += size.size
        items += 1
        if items > max_items:
            raise BadCBOR(f"more than {max_items} CBOR items")
        if remaining:
            left = remaining[-1]
            if is_map[-1] and not left & 1 and major != _TEXT:
                raise BadCBOR("CBOR map keys must be text strings")
            remaining[-1] = left - 1
        if major < 2:
            pass
        elif major < 4:
            if arg > n - pos:
                raise BadCBOR(f"CBOR string of {arg} bytes is longer than the input")
            pos += arg
        elif major < 6:
            count = arg if major == 4 else 2 * arg
            if count > n - pos:  # every item takes at least one byte
                raise BadCBOR(f"CBOR container of {arg} items is longer than the input")
            if count:
                if len(remaining) >= max_depth:
                    raise BadCBOR(f"CBOR nested deeper than {max_depth}")
                remaining.append(count)
                is_map.append(major == 5)
                continue
        elif major == 6:
            raise BadCBOR(f"CBOR tags are not accepted (tag {arg})")
        elif info not in _SIMPLE_OK:
            raise BadCBOR(f"CBOR simple value {arg} is not accepted")
        while remaining and not remaining[-1]:
            remaining.pop()
            is_map.pop()
        if not remaining:
            break
    if pos != n:
        raise BadCBOR(f"{n - pos} trailing bytes after the CBOR value")


def loads(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Any:
    """Decode one value from untrusted ``data`` after ``check`` passed; BadCBOR otherwise."""
    check(data, max_depth=max_depth, max_items=max_items)
    try:
        # The check above already bounds depth; cbor2's own limit counts a little differently.
        return cbor2.loads(
            data, max_depth=max_depth + 2, allow_indefinite=False, allow_duplicate_keys=False
        )
    except Exception as e:  # cbor2 raises several types: bad UTF-8, duplicate keys, ...
        raise BadCBOR(f"malformed CBOR: {excerpt(str(e), 80)}") from None
