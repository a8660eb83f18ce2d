"""Every message the TUI posts: intents from widgets, results from I/O workers.

Widgets say what the user wants (``OpenDirectory``); workers do the talking to peers and post
what came back (``ListingLoaded``). Bursty results (progress, cluster ticks) can replace their
own unprocessed predecessors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

# Intents


@dataclass
class OpenDirectory(Message):
    """Show the directory ``path`` (from the tree, the breadcrumbs or the file table)."""

    path: str


@dataclass
class EntryHighlighted(Message):
    """The cursor rests on ``entry`` (a ls entry) of directory ``directory``."""

    directory: str
    entry: dict[str, Any]


@dataclass
class HealthWanted(Message):
    """Replica health is wanted for these file paths (the selected and visible rows)."""

    paths: list[str]


@dataclass
class TreeExpanded(Message):
    """The tree wants the subdirectories of ``path``."""

    path: str


# Results


@dataclass
class ListingLoaded(Message):
    """The entries of ``path``, or ``error`` when they could not be read."""

    path: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class TreeChildrenLoaded(Message):
    """The subdirectory names of ``path`` for the tree."""

    path: str
    names: list[str]


@dataclass
class PreviewLoaded(Message):
    """The head of the file ``path`` (``data``, up to the preview limit) or why not."""

    path: str
    size: int
    data: bytes | None = None
    error: str | None = None


@dataclass
class StatLoaded(Message):
    """``client.stat(path)`` for the replica-health column; None when the stat failed."""

    path: str
    stat: dict[str, Any] | None


@dataclass
class ClusterSnapshot(Message):
    """One ``client.cluster()`` answer from the peer at ``url``."""

    url: str
    cluster: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClusterSnapshot)


@dataclass
class ClusterUnreachable(Message):
    """No peer answered the membership poll."""

    error: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClusterUnreachable)


@dataclass
class PeerSwitched(Message):
    """The TUI now talks to ``new`` because ``old`` stopped answering."""

    old: str
    new: str


@dataclass
class TransferProgress(Message):
    """Transfer ``transfer_id`` has moved ``done`` of ``total`` bytes."""

    transfer_id: int
    done: int
    total: int | None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TransferProgress) and message.transfer_id == self.transfer_id


@dataclass
class TransferFinished(Message):
    """Transfer ``transfer_id`` ended: ``error`` None on success; ``summary`` says what moved."""

    transfer_id: int
    summary: str
    error: str | None = None
    refresh: str | None = None


@dataclass
class ActionDone(Message):
    """A namespace change (delete, move, mkdir, conflict kept) succeeded or failed."""

    summary: str
    error: str | None = None
    refresh: str | None = None
