"""Lifeguard local health awareness: how much this member should distrust itself.

A member that misses acks it should have got, or hears itself suspected, is more likely slow
itself (overloaded CPU, paused process) than surrounded by failed peers. The score rises on such
evidence and falls on every successful probe; timeouts are stretched by ``score + 1`` so a slow
member waits longer before suspecting healthy peers.

Invariant: ``0 <= score < max_multiplier``.
"""

from __future__ import annotations


class Awareness:
    """The health score of this member (0 = healthy)."""

    def __init__(self, max_multiplier: int = 8) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be at least 1")
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Raise (positive delta) or lower the score, clamped to its range."""
        self.score = min(max(self.score + delta, 0), self._max - 1)

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current score."""
        return timeout * (self.score + 1)
