"""Directory operations on top of the coordinator: mkdir, rmdir, move, copy, chmod/chown.

Moves and copies never touch block data: the destination's manifest lists the source's blocks
(content addressing makes sharing free). A move is not atomic. For each batch of files it
writes the destinations first and only then tombstones the sources, so a crash at any point
leaves every file at its old path, its new path or both, never neither. A directory move marks
the destination directory's entry with `moving_from` until it is done; running the same move
again resumes it (files already moved are gone from the source and are not touched again).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from twisted.internet import defer

from peer.coordinator import Coordinator, Groups
from peer.errors import (
    AlreadyExists,
    BadRequest,
    ConflictingVersions,
    NotADirectory,
    NotEmpty,
    NotFound,
)
from peer.lookup import Lookup, decode_entries, decode_manifests, directory_of
from peer.manifest import (
    DIRECTORY,
    DIRECTORY_MODE,
    Attrs,
    Entry,
    Manifest,
    Merged,
    entry_key,
    entry_name,
    entry_prefix,
    manifest_key,
    merge_versions,
)
from peer.paths import ROOT, parent
from peer.permissions import (
    ADMIN_IDENTITY,
    EXECUTE,
    READ,
    WRITE,
    Identity,
    changed_attrs,
    new_attrs,
    require,
    require_remove,
    require_replace,
    require_traverse,
)
from peer.quorum import context_of
from storage.records import Sibling
from storage.vclock import VectorClock

MOVE_BATCH = 64
"""Files per step of a directory move or copy: one read and two writes per replica per step."""


class Namespace:
    """mkdir, rmdir, move, copy and attribute changes, run through `coordinator`'s quorums."""

    def __init__(self, coordinator: Coordinator, batch: int = MOVE_BATCH) -> None:
        self.c = coordinator
        self.batch = batch

    @property
    def _r(self) -> int:
        return self.c.settings.r

    @property
    def _w(self) -> int:
        return self.c.settings.w

    def _next(self, *seen: list[Sibling]) -> VectorClock:
        """A clock that descends every sibling in `seen` (a new version of what was read)."""
        siblings = [s for group in seen for s in group]
        return self.c.next_clock(context_of(siblings), siblings)

    # -- directories -----------------------------------------------------------------------

    async def mkdir(
        self, path: str, parents: bool = False, identity: Identity = ADMIN_IDENTITY
    ) -> dict[str, Any]:
        """Create the directory `path` (and, with `parents`, missing ones above it)."""
        if path == ROOT:
            if parents:
                return {"path": path}
            raise AlreadyExists("/ exists")
        found = await self.c.lookup(path, self._r)
        if found.is_file or (decode_entries(path, found.entry) and found.directory() is None):
            raise AlreadyExists(f"a file is at {path}")
        above = found.file_above()
        if above is not None:
            raise NotADirectory(f"{above} is a file, not a directory")
        require_traverse(identity, found.traversed())
        if found.directory() is not None:
            if parents:
                return {"path": path}
            raise AlreadyExists(f"{path} exists")
        missing = found.missing()
        if missing and not parents:
            raise NotFound(f"no directory at {missing[-1]} (create parents with parents=1)")
        container, container_attrs = found.container()
        require(identity, container_attrs, WRITE | EXECUTE, container)
        attrs = new_attrs(identity, container_attrs, DIRECTORY_MODE)
        seen = [*found.ancestors, (path, found.entry)]
        writes = self.c.directory_writes(seen, [*missing, path], attrs, self.c.now())
        await self.c.write_records(writes, self._w, f"mkdir {path}")
        return {"path": path}

    async def rmdir(
        self, path: str, recursive: bool = False, identity: Identity = ADMIN_IDENTITY
    ) -> None:
        """Remove the directory `path`; it must be empty unless `recursive`."""
        if path == ROOT:
            raise BadRequest("cannot remove the root directory")
        found = await self.c.lookup(path, self._r)
        merged = found.directory()
        if merged is None:
            if found.is_file or decode_entries(path, found.entry):
                raise NotADirectory(f"{path} is a file, not a directory")
            raise NotFound(f"no directory at {path}")
        require_traverse(identity, found.traversed())
        container, container_attrs = found.container()
        attrs = merged.attrs_from.attrs
        require_remove(identity, container, container_attrs, path, attrs)
        if recursive:
            await self._empty(path, attrs, identity)
        else:
            listing = await self._listing(path)
            if any(decode_entries(key, siblings) for key, siblings in listing.items()):
                raise NotEmpty(f"{path} is not empty (remove everything in it with recursive=1)")
        tombstone = (entry_key(path), Sibling(self._next(found.entry), None))
        await self.c.write_records([(parent(path), [tombstone])], self._w, f"rmdir {path}")

    async def _listing(self, directory: str) -> dict[str, list[Sibling]]:
        return await self.c.scan_prefix(directory, entry_prefix(directory), self._r)

    async def _empty(self, directory: str, attrs: Attrs, identity: Identity) -> None:
        """Remove everything below `directory` (which needs r, w and x), deepest first. Each
        level checks the removal of every entry in it (the sticky bit) before removing any."""
        require(identity, attrs, READ | WRITE | EXECUTE, directory)
        files, dirs = _split(directory, await self._listing(directory))
        for path, siblings in [*dirs, *files]:
            require_remove(identity, directory, attrs, path, _listed_attrs(path, siblings))
        for sub, siblings in dirs:
            merged = directory_of(sub, siblings)
            assert merged is not None
            await self._empty(sub, merged.attrs_from.attrs, identity)
            tombstone = (entry_key(sub), Sibling(self._next(siblings), None))
            await self.c.write_records([(directory, [tombstone])], self._w, f"rmdir {sub}")
        for start in range(0, len(files), self.batch):
            batch = files[start : start + self.batch]
            manifests = await self._manifests([path for path, _ in batch])
            writes: Groups = []
            for (path, entry), manifest in zip(batch, manifests, strict=True):
                writes += self.c.file_writes(path, self._next(manifest, entry), None)
            await self.c.write_records(writes, self._w, f"rmdir {directory}")

    async def _manifests(self, paths: list[str]) -> list[list[Sibling]]:
        groups = [(path, [manifest_key(path)]) for path in paths]
        found = await self.c.read_groups(groups, self._r, f"read {len(paths)} manifests")
        return [keys[0] for keys in found]

    # -- move and copy ---------------------------------------------------------------------

    async def transfer(
        self,
        source: str,
        dest: str,
        *,
        move: bool,
        overwrite: bool = False,
        identity: Identity = ADMIN_IDENTITY,
    ) -> dict[str, Any]:
        """Move or copy the file or directory `source` to `dest`; {"path": dest}."""
        verb = "move" if move else "copy"
        if source == ROOT:
            raise BadRequest(f"cannot {verb} the root directory")
        if dest == source or dest.startswith(source.rstrip("/") + "/"):
            raise BadRequest(f"cannot {verb} {source} into itself ({dest})")
        if dest == ROOT:
            raise AlreadyExists("/ exists")
        src, dst = await _both(self.c.lookup(source, self._r), self.c.lookup(dest, self._r))
        above = dst.file_above()
        if above is not None:
            raise NotADirectory(f"{above} is a file, not a directory")
        require_traverse(identity, src.traversed())
        require_traverse(identity, dst.traversed())
        if src.is_file:
            await self._transfer_file(src, dst, move, overwrite, identity)
        elif src.directory() is not None:
            await self._transfer_directory(src, dst, move, overwrite, identity)
        elif move and _marker(dst) == source:
            await self._clear_marker(dest)  # a move that stopped after emptying its source
        else:
            raise NotFound(f"no file or directory at {source}")
        return {"path": dest}

    def _check_remove(self, src: Lookup, attrs: Attrs, identity: Identity) -> None:
        container, container_attrs = src.container()
        require_remove(identity, container, container_attrs, src.path, attrs)

    def _check_create(self, dst: Lookup, identity: Identity) -> Attrs:
        container, container_attrs = dst.container()
        require(identity, container_attrs, WRITE | EXECUTE, container)
        return container_attrs

    async def _transfer_file(
        self, src: Lookup, dst: Lookup, move: bool, overwrite: bool, identity: Identity
    ) -> None:
        head = _single_version(src)
        require(identity, head.attrs, 0 if move else READ, src.path)
        if move:
            self._check_remove(src, head.attrs, identity)
        if dst.directory() is not None and not dst.is_file:
            raise AlreadyExists(f"{dst.path} is a directory")
        container, container_attrs = dst.container()
        require(identity, container_attrs, WRITE | EXECUTE, container)
        now = self.c.now()
        if dst.is_file:
            existing = merge_versions(decode_manifests(dst.path, dst.manifest))
            rerun = move and _same_content(existing, head)  # a move being run again
            if not overwrite and not rerun:
                raise AlreadyExists(f"{dst.path} exists (overwrite it with overwrite=true)")
            if not rerun:
                require_replace(
                    identity, container, container_attrs, dst.path, existing.attrs_from.attrs
                )
            copied = _replacing(head, existing, head.mtime if move else now)
        elif move:
            copied = replace(head, content_clock=None, attrs_clock=None)
        else:
            attrs = new_attrs(identity, container_attrs, head.mode)
            copied = replace(
                head.with_attrs(attrs), mtime=now, content_clock=None, attrs_clock=None
            )
        copied = replace(copied, writer=self.c.name)
        await self.c.touch_blocks([b.hash for b in head.blocks])
        writes = self.c.file_writes(dst.path, self._next(dst.manifest), copied)
        if not dst.is_file:
            dir_attrs = new_attrs(identity, container_attrs, DIRECTORY_MODE)
            writes += self.c.directory_writes(dst.ancestors, dst.missing(), dir_attrs, now)
        await self.c.write_records(writes, self._w, f"write {dst.path}")
        if move:
            tombstones = self.c.file_writes(src.path, self._next(src.manifest, src.entry), None)
            await self.c.write_records(tombstones, self._w, f"delete {src.path}")

    async def _transfer_directory(
        self,
        src: Lookup,
        dst: Lookup,
        move: bool,
        overwrite: bool,
        identity: Identity,
    ) -> None:
        source = src.directory()
        assert source is not None
        attrs = source.attrs_from.attrs
        if move:
            self._check_remove(src, attrs, identity)
            require(identity, attrs, WRITE | EXECUTE, src.path)  # its entries move out of it
        else:
            require(identity, attrs, READ | EXECUTE, src.path)
        if dst.is_file:
            raise AlreadyExists(f"a file is at {dst.path}")
        target = dst.directory()
        resuming = move and _marker(dst) == src.path
        if target is not None and not (resuming or overwrite):
            raise AlreadyExists(f"{dst.path} exists (merge into it with overwrite=true)")
        container_attrs = self._check_create(dst, identity)
        if target is not None and not resuming:
            require(identity, target.attrs_from.attrs, WRITE | EXECUTE, dst.path)
        now = self.c.now()
        marker = src.path if move else None
        seen = [*dst.ancestors, (dst.path, dst.entry)]
        writes = self.c.directory_writes(
            seen, dst.missing(), new_attrs(identity, container_attrs, DIRECTORY_MODE), now
        )
        if target is None:
            made = attrs if move else new_attrs(identity, container_attrs, attrs.mode)
            writes += self.c.directory_writes(seen, [dst.path], made, now, moving_from=marker)
        elif move:  # merging into an existing directory keeps its owner, group and mode
            entry = replace(target.attrs_from, moving_from=marker, attrs_clock=target.attrs_clock)
            writes.append((parent(dst.path), [(entry_key(dst.path), self._sibling(dst, entry))]))
        if writes:
            await self.c.write_records(writes, self._w, f"mkdir {dst.path}")
        await self._transfer_tree(src.path, attrs, dst.path, move, identity)
        if move:
            tombstone = (entry_key(src.path), Sibling(self._next(src.entry), None))
            await self.c.write_records([(parent(src.path), [tombstone])], self._w, "move")
            await self._clear_marker(dst.path)

    def _sibling(self, found: Lookup, entry: Entry) -> Sibling:
        """A new version of `found`'s directory entry."""
        return Sibling(self._next(found.entry), entry.encode())

    async def _clear_marker(self, path: str) -> None:
        """Rewrite a moved directory's entry without its `moving_from` mark."""
        found = await self.c.lookup(path, self._r, above=False)
        merged = found.directory()
        if merged is None:
            return
        entry = replace(merged.attrs_from, moving_from=None)
        record = (entry_key(path), self._sibling(found, entry))
        await self.c.write_records([(parent(path), [record])], self._w, f"move {path}")

    async def _transfer_tree(
        self,
        source: str,
        source_attrs: Attrs,
        dest: str,
        move: bool,
        identity: Identity,
    ) -> None:
        """Move or copy everything in directory `source` into the existing `dest`.

        Every entry checks its own permissions before anything of it is written: a move needs
        to remove it from `source` (w and x there, the sticky rule), a copy needs r on it (and
        x on a directory). An entry already at the destination is written into, never
        rewritten: a directory keeps its attributes and needs w and x, a file keeps its
        attributes and needs w and the sticky rule of `dest` (see `require_replace`).
        """
        listing, existing = await _both(self._listing(source), self._listing(dest))
        files, dirs = _split(source, listing)
        dest_attrs = directory_attrs(await self.c.lookup(dest, self._r, above=False))
        for sub, siblings in dirs:
            merged = directory_of(sub, siblings)
            assert merged is not None
            attrs = merged.attrs_from.attrs
            if move:
                require_remove(identity, source, source_attrs, sub, attrs)
                require(identity, attrs, WRITE | EXECUTE, sub)
            else:
                require(identity, attrs, READ | EXECUTE, sub)
            target = _join(dest, entry_name(entry_key(sub)))
            seen = existing.get(entry_key(target), [])
            there = directory_of(target, seen)
            if there is None and decode_entries(target, seen):
                raise AlreadyExists(f"a file is at {target}")
            if there is None:
                made = attrs if move else new_attrs(identity, dest_attrs, attrs.mode)
                entry = Entry.directory(made, merged.attrs_from.mtime)
                record = (entry_key(target), Sibling(self._next(seen), entry.encode()))
                await self.c.write_records([(dest, [record])], self._w, f"mkdir {target}")
            else:
                require(identity, there.attrs_from.attrs, WRITE | EXECUTE, target)
            await self._transfer_tree(sub, attrs, target, move, identity)
            if move:
                tombstone = (entry_key(sub), Sibling(self._next(siblings), None))
                await self.c.write_records([(source, [tombstone])], self._w, f"move {sub}")
        for start in range(0, len(files), self.batch):
            batch = files[start : start + self.batch]
            targets = [_join(dest, entry_name(entry_key(path))) for path, _ in batch]
            both = await self._manifests([path for path, _ in batch] + targets)
            sources, dests = both[: len(batch)], both[len(batch) :]
            writes: Groups = []
            moved: list[int] = []
            hashes: list[str] = []
            conflicted: list[str] = []
            now = self.c.now()
            for index, ((path, _), target) in enumerate(zip(batch, targets, strict=True)):
                versions = decode_manifests(path, sources[index])
                if not versions:
                    continue  # removed meanwhile
                merged = merge_versions(versions)
                if len(merged.heads) > 1:
                    conflicted.append(path)  # stays at the source; reported below
                    continue
                ((_, head),) = merged.heads
                head = head.with_attrs(merged.attrs_from.attrs)
                if move:
                    require_remove(identity, source, source_attrs, path, head.attrs)
                else:
                    require(identity, head.attrs, READ, path)
                there = decode_manifests(target, dests[index])
                if there:
                    replaced = merge_versions(there)
                    if not (move and _same_content(replaced, head)):
                        require_replace(
                            identity, dest, dest_attrs, target, replaced.attrs_from.attrs
                        )
                    copied = _replacing(head, replaced, head.mtime if move else now)
                elif move:
                    copied = replace(head, content_clock=None, attrs_clock=None)
                else:
                    attrs = new_attrs(identity, dest_attrs, head.mode)
                    copied = replace(
                        head.with_attrs(attrs), mtime=now, content_clock=None, attrs_clock=None
                    )
                hashes += [b.hash for b in head.blocks]
                writes += self.c.file_writes(target, self._next(dests[index]), copied)
                moved.append(index)
            await self.c.touch_blocks(hashes)
            if writes:
                await self.c.write_records(writes, self._w, f"write {dest}")
            if move and moved:
                tombstones: Groups = []
                for index in moved:
                    path, entry = batch[index]
                    tombstones += self.c.file_writes(path, self._next(sources[index], entry), None)
                await self.c.write_records(tombstones, self._w, f"delete in {source}")
            if conflicted:
                raise ConflictingVersions(
                    f"{', '.join(conflicted)} have concurrent versions and were left where they "
                    "are; resolve them and run the same request again"
                )

    # -- attributes ------------------------------------------------------------------------

    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        identity: Identity = ADMIN_IDENTITY,
    ) -> dict[str, Any]:
        """chmod/chown of a file or directory; the new stat."""
        if path == ROOT:
            raise BadRequest("the root directory's owner, group and mode are fixed")
        found = await self.c.lookup(path, self._r)
        if found.is_file:
            self.c.file_version(found, None, identity, 0)  # traversal; conflicts refused
            merged = merge_versions(decode_manifests(path, found.manifest))
            ((clock, head),) = merged.heads
            attrs = changed_attrs(identity, merged.attrs_from.attrs, path, mode, owner, group)
            changed = replace(
                head.with_attrs(attrs),
                content_clock=head.content_clock or clock,
                attrs_clock=None,
            )
            writes = self.c.file_writes(path, self._next(found.manifest), changed)
        else:
            directory = found.directory()
            if directory is None:
                raise NotFound(f"no file or directory at {path}")
            require_traverse(identity, found.traversed())
            current = directory.attrs_from
            attrs = changed_attrs(identity, current.attrs, path, mode, owner, group)
            entry = replace(current.with_attrs(attrs), attrs_clock=None)
            record = (entry_key(path), Sibling(self._next(found.entry), entry.encode()))
            writes = [(parent(path), [record])]
        await self.c.write_records(writes, self._w, f"chmod {path}")
        return await self.c.stat(path, identity=identity)


def directory_attrs(found: Lookup) -> Attrs:
    """The attributes of the directory a lookup found (the root's for the root)."""
    merged = found.directory()
    if merged is None:
        raise NotFound(f"no directory at {found.path}")
    return merged.attrs_from.attrs


def _single_version(found: Lookup) -> Manifest:
    """The one current content of a file (merged attributes), or ConflictingVersions."""
    merged = merge_versions(decode_manifests(found.path, found.manifest))
    if len(merged.heads) > 1:
        raise ConflictingVersions(
            f"{found.path} has {len(merged.heads)} concurrent versions; resolve them first"
        )
    ((_, head),) = merged.heads
    return head.with_attrs(merged.attrs_from.attrs)


def _same_content(existing: Merged[Manifest], head: Manifest) -> bool:
    """Whether a file at the destination holds exactly `head`'s content (one version)."""
    if len(existing.heads) != 1:
        return False
    ((_, there),) = existing.heads
    return there.blake3 == head.blake3 and there.blocks == head.blocks


def _replacing(head: Manifest, existing: Merged[Manifest], mtime: float) -> Manifest:
    """`head`'s content written over the file `existing`: the replaced file keeps its owner,
    group and mode (and their clock, so a concurrent chmod still wins over this write)."""
    return replace(
        head.with_attrs(existing.attrs_from.attrs),
        mtime=mtime,
        content_clock=None,
        attrs_clock=existing.attrs_clock,
    )


def _listed_attrs(path: str, siblings: list[Sibling]) -> Attrs:
    """The attributes of a listed entry (a directory's when a file shares its name)."""
    merged = directory_of(path, siblings) or merge_versions(decode_entries(path, siblings))
    return merged.attrs_from.attrs


def _marker(found: Lookup) -> str | None:
    """The source an unfinished move into the directory `found` is filling it from."""
    merged = found.directory()
    if merged is None or found.path == ROOT:
        return None
    marks = {e.moving_from for _, e in decode_entries(found.path, found.entry)}
    return next((m for m in marks if m is not None), None)


def _split(
    directory: str, listing: dict[str, list[Sibling]]
) -> tuple[list[tuple[str, list[Sibling]]], list[tuple[str, list[Sibling]]]]:
    """(files, directories) of a listing, each as (path, entry siblings), sorted by name."""
    files, dirs = [], []
    for key, siblings in sorted(listing.items()):
        kinds = {e.type for _, e in decode_entries(key, siblings)}
        path = _join(directory, entry_name(key))
        if DIRECTORY in kinds:
            dirs.append((path, siblings))
        elif kinds:
            files.append((path, siblings))
    return files, dirs


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    """Await two coroutines concurrently; the first failure is raised."""
    try:
        results = await defer.gatherResults(
            [defer.ensureDeferred(first), defer.ensureDeferred(second)], consumeErrors=True
        )
    except defer.FirstError as e:
        e.subFailure.raiseException()
    return results[0], results[1]
