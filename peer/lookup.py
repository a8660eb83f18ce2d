"""What one read tells about a path: its manifest, its entry in its directory and the entries of
every directory above it, read together (one RPC per replica, see Coordinator.lookup).

Pure functions over those siblings answer: is it a file, a directory or nothing; which
ancestors are missing or are files; what attributes govern traversal and creation. An ancestor
whose entry is missing (removed while something below it was being written) is skipped by the
traversal check, so a file under a removed directory stays readable by its path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peer.errors import Unavailable
from peer.manifest import (
    DIRECTORY,
    FILE,
    ROOT_ATTRS,
    Attrs,
    Entry,
    Manifest,
    Merged,
    merge_versions,
)
from peer.paths import ROOT
from peer.quorum import live
from storage.records import Sibling
from storage.vclock import VectorClock


def decode_entries(key: str, siblings: Iterable[Sibling]) -> list[tuple[VectorClock, Entry]]:
    """The live entries among `siblings`; Unavailable when one is unreadable."""
    try:
        return [(s.clock, Entry.decode(s.value or b"")) for s in live(list(siblings))]
    except ValueError as e:
        raise Unavailable(f"stored entry {key!r} is unreadable: {e}") from None


def decode_manifests(path: str, siblings: Iterable[Sibling]) -> list[tuple[VectorClock, Manifest]]:
    """The live manifests among `siblings`; Unavailable when one is unreadable."""
    try:
        return [(s.clock, Manifest.decode(s.value or b"")) for s in live(list(siblings))]
    except ValueError as e:
        raise Unavailable(f"stored manifest of {path} is unreadable: {e}") from None


def directory_of(key: str, siblings: Iterable[Sibling]) -> Merged[Entry] | None:
    """The merged directory entry among `siblings`, or None when no live one is a directory."""
    dirs = [(c, e) for c, e in decode_entries(key, siblings) if e.type == DIRECTORY]
    return merge_versions(dirs) if dirs else None


def is_file_entry(key: str, siblings: Iterable[Sibling]) -> bool:
    """Whether the live entries are files only (no directory among them)."""
    kinds = {e.type for _, e in decode_entries(key, siblings)}
    return kinds == {FILE}


@dataclass(frozen=True)
class Lookup:
    """The siblings read for `path`: `manifest` (f:), `entry` (its e: record) and, outermost
    first, (directory, entry siblings) for each ancestor below the root."""

    path: str
    manifest: list[Sibling]
    entry: list[Sibling]
    ancestors: list[tuple[str, list[Sibling]]]

    @property
    def is_file(self) -> bool:
        """A live manifest is at `path`."""
        return bool(live(self.manifest))

    def directory(self) -> Merged[Entry] | None:
        """The directory at `path`, if one is there (the root always is)."""
        if self.path == ROOT:
            return Merged([], Entry.directory(ROOT_ATTRS, 0.0), VectorClock())
        return directory_of(self.path, self.entry)

    def file_above(self) -> str | None:
        """The first ancestor that is a file, not a directory, if any."""
        for directory, siblings in self.ancestors:
            if is_file_entry(directory, siblings):
                return directory
        return None

    def missing(self) -> list[str]:
        """Ancestors with no directory entry, outermost first."""
        return [d for d, siblings in self.ancestors if directory_of(d, siblings) is None]

    def traversed(self) -> list[tuple[str, Attrs]]:
        """(directory, attributes) of the root and each existing ancestor, outermost first."""
        found = [(ROOT, ROOT_ATTRS)]
        for directory, siblings in self.ancestors:
            merged = directory_of(directory, siblings)
            if merged is not None:
                found.append((directory, merged.attrs_from.attrs))
        return found

    def container(self) -> tuple[str, Attrs]:
        """The nearest existing directory above `path` and its attributes: the parent when it
        exists (creating in it needs w there), else the ancestor under which parents are made."""
        return self.traversed()[-1]
