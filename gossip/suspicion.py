"""Lifeguard suspicion timers: pure arithmetic, no clock of their own.

A suspected member is declared dead when its timer expires. The timeout starts at ``max`` and
shrinks towards ``min`` as independent confirmations (other members also failing to reach it)
arrive, following memberlist:
``timeout = max(min, max - log(c + 1) / log(k + 1) * (max - min))`` for ``c`` confirmations out of
``k`` expected; ``min = mult * max(1, log10(n)) * probe_interval`` and ``max = max_mult * min``.
"""

from __future__ import annotations

import math


def suspicion_min_timeout(mult: float, n: int, probe_interval: float) -> float:
    """The shortest suspicion timeout for a cluster of ``n`` members."""
    return mult * max(1.0, math.log10(max(1, n))) * probe_interval


def suspicion_timeout(confirmations: int, k: int, min_t: float, max_t: float) -> float:
    """The whole timeout after ``confirmations`` of ``k`` expected independent confirmations."""
    if k < 1:
        return min_t
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_t, max_t - frac * (max_t - min_t))


class Suspicion:
    """One suspicion of one member: when it started and who has confirmed it.

    The member that raised the suspicion is recorded but is not a confirmation; each other
    member counts once, and at most ``k`` confirmations count.
    """

    __slots__ = ("_confirmers", "confirmations", "deadline", "k", "max_t", "min_t", "start")

    def __init__(self, origin: str, start: float, k: int, min_t: float, max_t: float) -> None:
        self.start = start
        self.k = k
        self.min_t = min_t
        self.max_t = max_t
        self.confirmations = 0
        self._confirmers = {origin}
        self.deadline = start + (min_t if k < 1 else max_t)

    def confirm(self, member: str) -> bool:
        """Record an independent confirmation; True when it was new and shortened the timer."""
        if self.confirmations >= self.k or member in self._confirmers:
            return False
        self._confirmers.add(member)
        self.confirmations += 1
        self.deadline = self.start + suspicion_timeout(
            self.confirmations, self.k, self.min_t, self.max_t
        )
        return True
