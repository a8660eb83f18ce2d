"""Anti-entropy digests, free of I/O: what two replicas compare to find what differs cheaply.

Two peers compare only what they should both hold: the items whose home replicas (the first
N of the preference list) include both of them. Those items are spread over BUCKETS buckets
by the hash of their key; a bucket's digest is a hash over its items in key order, each item
reduced to a canonical digest (of a record: its key and its siblings in clock order; of a
block: its hash). Equal buckets cost 32 bytes each and nothing else; only the items of
buckets that differ are exchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import blake3

from storage.records import Sibling

BUCKETS = 256
EMPTY = blake3.blake3(b"").digest()


def bucket_of(key: str) -> int:
    """The bucket a key (or block hash) falls in."""
    return blake3.blake3(key.encode()).digest(length=1)[0] % BUCKETS


def record_digest(key: str, siblings: Iterable[Sibling]) -> bytes:
    """A digest of one record that is equal on two replicas exactly when they hold the same
    siblings (whatever order they were stored in)."""
    parts = sorted(
        s.clock.encode() + (b"T" if s.value is None else b"V" + blake3.blake3(s.value).digest())
        for s in siblings
    )
    hasher = blake3.blake3(key.encode() + b"\0")
    for part in parts:
        hasher.update(len(part).to_bytes(4, "big") + part)
    return hasher.digest()


@dataclass
class DigestTree:
    """Item digests grouped into buckets; `digests()` is what goes on the wire."""

    items: dict[int, dict[str, bytes]]

    @classmethod
    def build(cls, entries: Iterable[tuple[str, bytes]]) -> DigestTree:
        """From (key, item digest) pairs."""
        items: dict[int, dict[str, bytes]] = {}
        for key, digest in entries:
            items.setdefault(bucket_of(key), {})[key] = digest
        return cls(items)

    def digests(self) -> list[bytes]:
        """One 32-byte digest per bucket (the empty digest for empty buckets)."""
        out = []
        for bucket in range(BUCKETS):
            entries = self.items.get(bucket)
            if not entries:
                out.append(EMPTY)
                continue
            hasher = blake3.blake3()
            for key in sorted(entries):
                hasher.update(key.encode() + b"\0" + entries[key])
            out.append(hasher.digest())
        return out

    def differing(self, theirs: list[bytes]) -> list[int]:
        """Buckets whose digest differs from `theirs`."""
        return [
            b
            for b, (mine, other) in enumerate(zip(self.digests(), theirs, strict=True))
            if mine != other
        ]

    def keys_in(self, buckets: Iterable[int]) -> list[str]:
        """Every key in the given buckets."""
        return sorted(key for b in buckets for key in self.items.get(b, {}))


def shared_homes(homes: Sequence[str], me: str, partner: str) -> bool:
    """Whether an item with these home replicas belongs on both `me` and `partner`."""
    return me in homes and partner in homes
