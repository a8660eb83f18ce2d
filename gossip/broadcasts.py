"""The queue of membership updates waiting to be piggybacked on outgoing datagrams.

Each update is about one member; a newer update about a member replaces the queued one (the
core only queues updates that supersede what it knew). Updates go out least-transmitted first,
newest first among equals, and each is dropped after ``limit`` transmissions, where
``limit = retransmit_mult * ceil(log10(n + 1))`` (memberlist's lambda * log(N)).
"""

from __future__ import annotations

import math
from typing import Any

# Stop looking for an update that fits once this many in a row did not.
_MAX_MISFITS = 8


def retransmit_limit(mult: int, n: int) -> int:
    """How many times each update is sent in a cluster of ``n`` members."""
    return mult * math.ceil(math.log10(n + 1))


class _Item:
    __slots__ = ("size", "transmits", "update")

    def __init__(self, update: list[Any], size: int) -> None:
        self.update = update
        self.size = size
        self.transmits = 0


class BroadcastQueue:
    """Updates keyed by member name, bucketed by how often each was sent."""

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        # transmits -> {name: item}, insertion-ordered so the newest is last
        self._buckets: dict[int, dict[str, _Item]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def put(self, name: str, update: list[Any], size: int) -> None:
        """Queue ``update`` (encoded size ``size``) about ``name``, replacing any older one."""
        self.discard(name)
        item = _Item(update, size)
        self._items[name] = item
        self._buckets.setdefault(0, {})[name] = item

    def discard(self, name: str) -> None:
        """Forget the queued update about ``name``, if any."""
        old = self._items.pop(name, None)
        if old is not None:
            bucket = self._buckets[old.transmits]
            del bucket[name]
            if not bucket:
                del self._buckets[old.transmits]

    def take(self, budget: int, limit: int) -> tuple[list[list[Any]], int]:
        """Updates whose sizes add up to at most ``budget`` bytes, counting one transmission each.

        Returns the updates and their total size; updates sent ``limit`` times leave the queue.
        """
        chosen: list[tuple[str, _Item]] = []
        used = 0
        for count in sorted(self._buckets):
            if count >= limit:  # the limit shrank (members left): these are done
                for name in self._buckets.pop(count):
                    del self._items[name]
                continue
            misfits = 0
            for name, item in reversed(self._buckets[count].items()):
                if used + item.size <= budget:
                    chosen.append((name, item))
                    used += item.size
                    misfits = 0
                else:
                    misfits += 1
                    if misfits >= _MAX_MISFITS:
                        break
            if misfits >= _MAX_MISFITS:
                break
        for name, item in chosen:
            bucket = self._buckets[item.transmits]
            del bucket[name]
            if not bucket:
                del self._buckets[item.transmits]
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[name]
            else:
                self._buckets.setdefault(item.transmits, {})[name] = item
        return [item.update for _, item in chosen], used
