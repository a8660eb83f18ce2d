"""Version contexts as clients see them: a vector clock as URL-safe base64 text.

The text is opaque to clients; they echo it back in `X-Qfs-Version` (to resolve siblings) or
`?version=` (to read one sibling). Anyone holding a token can send any text here, so it is
decoded with the bounded decoder: at most MAX_VERSION_TEXT characters, one flat map, no tags.
"""

from __future__ import annotations

import base64
import binascii

from gossip.cbor import loads
from storage.vclock import MAX_ENTRIES, VectorClock

MAX_VERSION_TEXT = 4096
# No counter this cluster issues comes near this: counters start from the wall clock in
# microseconds (2**60 of them is 36,000 years) and grow by one per write. Refusing anything
# above it keeps 2**64 - 2**60 of headroom, so merging a context never runs a counter out.
MAX_CONTEXT_COUNTER = 2**60


def encode_version(clock: VectorClock) -> str:
    """The version text for `clock`."""
    return base64.urlsafe_b64encode(clock.encode()).rstrip(b"=").decode("ascii")


def decode_version(text: str) -> VectorClock:
    """Parse version text; ValueError when it is not one this cluster produced."""
    if not text or len(text) > MAX_VERSION_TEXT:
        raise ValueError("version context is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("version context is not base64") from None
    try:
        # A clock is one flat map: depth 1, a key and a counter per entry.
        clock = VectorClock.from_cbor(loads(raw, max_depth=1, max_items=1 + 2 * MAX_ENTRIES))
    except ValueError as e:  # BadCBOR is one
        raise ValueError(f"version context is not a vector clock: {e}") from None
    for node, counter in clock.entries.items():
        if counter > MAX_CONTEXT_COUNTER:
            raise ValueError(
                f"version context counter {counter} for {node[:64]!r} is beyond any this "
                f"cluster issues (at most {MAX_CONTEXT_COUNTER})"
            )
    return clock
