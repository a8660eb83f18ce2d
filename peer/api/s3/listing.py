"""Object listings: a bucket's directory tree walked in S3's key order, one page of the core's
paginated directory listing at a time, so a listing holds O(page) entries whatever the size.

S3 orders keys by their UTF-8 bytes (the order of Python's str comparison), and a directory
``d`` contributes the keys ``d/...``: within one directory that is name order with each
directory's name read as ``name/``. A page in name order is re-sorted with a small heap: a
directory is held back until a name above ``name/`` arrives (only names starting with
``name`` followed by one of `` !"#$%&'()*+,-.`` come between).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from peer.errors import NotADirectory, NotFound
from peer.manifest import DIRECTORY

FetchPage = Callable[[str, "str | None"], Awaitable[tuple[list[dict[str, Any]], "str | None"]]]
"""(directory path, after name) -> (entries in name order, the name to continue after)."""


@dataclass(frozen=True)
class Item:
    """One line of a listing: a key with its entry, or (entry None) a common prefix."""

    key: str
    entry: dict[str, Any] | None


def order_name(entry: dict[str, Any]) -> str:
    """The entry's name as it sorts among S3 keys: directories as ``name/``."""
    return entry["name"] + "/" if entry["type"] == DIRECTORY else entry["name"]


def first_name(after_rel: str) -> str:
    """The smallest entry name whose keys can follow `after_rel` (a key relative to the
    directory): its first name, cut before any character that sorts below '/' (a directory
    ``a`` has keys ``a/...`` above ``a-b``)."""
    name = after_rel.split("/", 1)[0]
    for index, char in enumerate(name):
        if char < "/":
            return name[:index]
    return name


def name_before(name: str) -> str:
    """A string above every entry name below `name` and below `name` itself, never a valid
    entry name (too long): the exclusive `after` that starts a listing at `name`."""
    last = chr(ord(name[-1]) - 1)
    if "\ud800" <= last <= "\udfff":
        last = "\ud7ff"
    return name[:-1] + last + "\U0010ffff" * 256


async def directory_items(
    fetch: FetchPage, directory: str, start: str, name_prefix: str
) -> AsyncIterator[dict[str, Any]]:
    """Entries of `directory` named `name_prefix`... and not below `start`, in S3 order; a
    missing directory (or a file there) has none."""
    after = name_before(start) if start else None
    held: list[tuple[str, int, dict[str, Any]]] = []
    count = 0
    while True:
        try:
            entries, following = await fetch(directory, after)
        except (NotFound, NotADirectory):
            return
        for entry in entries:
            name = entry["name"]
            if not name.startswith(name_prefix):
                if name > name_prefix:
                    following = None
                    break
                continue
            while held and held[0][0] <= name:
                yield heapq.heappop(held)[2]
            count += 1
            heapq.heappush(held, (order_name(entry), count, entry))
        if following is None:
            break
        after = following
    while held:
        yield heapq.heappop(held)[2]


async def walk(
    fetch: FetchPage,
    directory: str,
    base: str,
    name_prefix: str,
    after: str | None,
    slash_delimited: bool,
) -> AsyncIterator[Item]:
    """Items of `directory` (whose keys start with `base`) for names starting with
    `name_prefix`, keys above `after`, in S3 order. With `slash_delimited` a subdirectory is
    one common prefix; otherwise its keys follow (an empty one is the key ``name/``)."""
    start = name_prefix
    if after is not None and after.startswith(base):
        start = max(start, first_name(after[len(base) :]))
    async for entry in directory_items(fetch, directory, start, name_prefix):
        key = base + order_name(entry)
        if entry["type"] != DIRECTORY:
            if after is None or key > after:
                yield Item(key, entry)
            continue
        if slash_delimited:
            if after is None or key > after:
                yield Item(key, None)
            continue
        inside = after is not None and after.startswith(key)
        if after is not None and after >= key and not inside:
            continue  # every key below this directory sorts before `after`
        empty = True
        sub = directory.rstrip("/") + "/" + entry["name"]
        async for item in walk(fetch, sub, key, "", after if inside else None, False):
            empty = False
            yield item
        if empty and not inside:
            yield Item(key, entry)


async def list_keys(
    fetch: FetchPage,
    bucket_path: str,
    prefix: str,
    delimiter: str | None,
    after: str | None,
) -> AsyncIterator[Item]:
    """Every key of the bucket at `bucket_path` starting with `prefix`, above `after`, in S3
    order; with a delimiter, keys containing it past the prefix fold into common prefixes."""
    base, _, name_prefix = prefix.rpartition("/")
    base = base + "/" if base or prefix.startswith("/") else ""
    if any(name in ("", ".", "..") for name in base.split("/")[:-1]):
        return  # no key below an empty or dot name exists
    directory = bucket_path + ("/" + base.rstrip("/") if base else "")
    items = walk(fetch, directory, base, name_prefix, after, delimiter == "/")
    if base and not name_prefix and (after is None or base > after):
        items = _with_marker(fetch, items, directory, base)
    if delimiter in (None, "", "/"):
        async for item in items:
            yield item
        return
    last_prefix = None
    async for item in items:
        rest = item.key[len(prefix) :]
        found = rest.find(delimiter)
        if found < 0:
            yield item
            continue
        common = prefix + rest[: found + len(delimiter)]
        if common != last_prefix and (after is None or common > after):
            yield Item(common, None)
        last_prefix = common


async def _with_marker(
    fetch: FetchPage, items: AsyncIterator[Item], directory: str, base: str
) -> AsyncIterator[Item]:
    """`items`, or when there are none and `directory` is an empty directory, the key
    ``base`` itself (the prefix ``a/`` lists the empty directory ``a`` as the key ``a/``)."""
    empty = True
    async for item in items:
        empty = False
        yield item
    if not empty:
        return
    up, _, name = directory.rpartition("/")
    async for entry in directory_items(fetch, up or "/", name, name):
        if entry["name"] == name:
            if entry["type"] == DIRECTORY:
                yield Item(base, entry)
            return
