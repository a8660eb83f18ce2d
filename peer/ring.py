"""Consistent-hash ring with virtual nodes: which peers hold a key.

Each member owns `vnodes` points on a 64-bit circle (BLAKE3 of "member#i"); a key's preference
list is the distinct members met walking clockwise from the key's own point. Adding or removing
one member moves only the keys next to its points, about 1/members of them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import blake3

DEFAULT_VNODES = 64


def ring_position(text: str) -> int:
    """A key's (or a virtual node's) point on the 64-bit ring."""
    return int.from_bytes(blake3.blake3(text.encode()).digest(length=8), "big")


class HashRing:
    """An immutable ring over a set of member ids."""

    def __init__(self, members: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        self.members = frozenset(members)
        self._vnodes = vnodes
        points = sorted(
            (ring_position(f"{member}#{i}"), member)
            for member in self.members
            for i in range(vnodes)
        )
        self._positions = [position for position, _ in points]
        self._owners = [member for _, member in points]

    def without(self, member: str) -> HashRing:
        """The ring once `member` has left it."""
        return HashRing(self.members - {member}, self._vnodes)

    def preference(self, key: str, limit: int | None = None) -> list[str]:
        """Distinct members clockwise from `key`'s point, at most `limit` of them."""
        wanted = len(self.members) if limit is None else min(limit, len(self.members))
        found: list[str] = []
        if not wanted:
            return found
        start = bisect.bisect_right(self._positions, ring_position(key))
        count = len(self._owners)
        for step in range(count):
            owner = self._owners[(start + step) % count]
            if owner not in found:
                found.append(owner)
                if len(found) == wanted:
                    break
        return found
