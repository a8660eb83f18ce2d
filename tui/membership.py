"""Membership events, found by comparing two successive cluster snapshots (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def member_events(
    before: Sequence[dict[str, Any]] | None, after: Sequence[dict[str, Any]]
) -> list[str]:
    """What changed between two member lists, one line each, in name order.

    ``before`` None means this is the first snapshot: every member is reported as seen.
    """
    old = {m["name"]: m for m in before or []}
    new = {m["name"]: m for m in after}
    events = []
    for name in sorted(old.keys() | new.keys()):
        was, now = old.get(name), new.get(name)
        if now is None:
            events.append(f"{name} left the member list")
        elif was is None:
            verb = "seen" if before is None else "joined"
            events.append(f"{name} {verb}: {now['state']} (incarnation {now['incarnation']})")
        elif was["state"] != now["state"]:
            events.append(
                f"{name} {was['state']} -> {now['state']} (incarnation {now['incarnation']})"
            )
        elif was["incarnation"] != now["incarnation"]:
            events.append(f"{name} incarnation {was['incarnation']} -> {now['incarnation']}")
    return events
