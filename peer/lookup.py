"""What one read tells about a path: its manifest, its entry in its directory and the entries of
every directory above it, read together (one RPC per replica, see Coordinator.lookup).

Pure functions over those siblings answer: is it a file, a directory or nothing; which
ancestors are missing or are files; what attributes govern traversal and creation. An ancestor
whose entry is missing where one must be (above a path that exists, or above an existing
ancestor: removed while something below it was being written, or not on the replicas read)
fails the traversal check closed for everyone but an admin: its permissions are unknown.
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


def permission_quorum(requested: int, cluster_r: int, admin: bool) -> int:
    """The R of a lookup whose attributes decide a permission check: at least the cluster's R
    unless the caller is an admin, so a `?r=1` (or `?w=1`) never lets one stale replica's
    owner, group or mode decide what a user may do."""
    return requested if admin else max(requested, cluster_r)


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

    def traversed(self) -> list[tuple[str, Attrs | None]]:
        """(directory, attributes) of the root and each ancestor, outermost first. An ancestor
        without a directory entry has None where one must be there (above an existing ancestor,
        or above a path that exists); the missing ones below every existing ancestor of a path
        not there yet are left out, as the operation creating the path creates them."""
        found: list[tuple[str, Attrs | None]] = [(ROOT, ROOT_ATTRS)]
        gaps: list[tuple[str, Attrs | None]] = []
        for directory, siblings in self.ancestors:
            merged = directory_of(directory, siblings)
            if merged is None:
                gaps.append((directory, None))
            else:
                found += gaps
                gaps = []
                found.append((directory, merged.attrs_from.attrs))
        if self.is_file or self.directory() is not None:
            found += gaps
        return found

    def container(self) -> tuple[str, Attrs]:
        """The nearest existing directory above `path` and its attributes: the parent when it
        exists (creating in it needs w there), else the ancestor under which parents are made."""
        return [(d, attrs) for d, attrs in self.traversed() if attrs is not None][-1]
