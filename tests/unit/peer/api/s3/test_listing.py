"""Object listings walk a directory tree in S3's key order, a small page at a time: checked
against a brute-force S3 listing of the same keys."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.api.s3.listing import first_name, list_keys, name_before
from peer.errors import NotFound
from tests.simnet import run

NAMES = ["a", "a-", "a.b", "a0", "ab", "b", "!x", "~", "é", "a b"]
PAGE = 3


class Tree:
    """Directories as dicts of name -> entry; fetch() pages them as the core does."""

    def __init__(self) -> None:
        self.dirs: dict[str, dict[str, dict[str, Any]]] = {"/bkt": {}}
        self.fetches = 0

    def add(self, parts: list[str], directory: bool) -> None:
        path = "/bkt"
        for index, name in enumerate(parts):
            leaf = index == len(parts) - 1
            entries = self.dirs[path]
            kind = "dir" if directory or not leaf else "file"
            if name in entries and entries[name]["type"] != kind:
                return  # a file and a directory cannot share a path: skip this one
            entries[name] = {"name": name, "type": kind, "size": 1, "mtime": 0.0}
            path = path + "/" + name
            if kind == "dir":
                self.dirs.setdefault(path, {})

    async def fetch(self, directory: str, after: str | None) -> tuple[list[dict], str | None]:
        self.fetches += 1
        if directory not in self.dirs:
            raise NotFound(directory)
        names = sorted(n for n in self.dirs[directory] if after is None or n > after)
        page = names[:PAGE]
        return [self.dirs[directory][n] for n in page], page[-1] if len(names) > PAGE else None

    def keys(self) -> list[str]:
        """Every key S3 would hold: files, and empty directories as NAME/."""
        found = []
        for path, entries in self.dirs.items():
            rel = path[len("/bkt/") :]
            if not entries and path != "/bkt":
                found.append(rel + "/")
            for name, entry in entries.items():
                if entry["type"] == "file":
                    found.append((rel + "/" if rel else "") + name)
        return sorted(found)


def reference(keys: list[str], prefix: str, delimiter: str | None, after: str | None) -> list[str]:
    out: list[str] = []
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if (after is None or common > after) and (not out or out[-1] != common):
                out.append(common)
        elif after is None or key > after:
            out.append(key)
    return out


def listed(tree: Tree, prefix: str, delimiter: str | None, after: str | None) -> list[str]:
    async def go() -> list[str]:
        return [item.key async for item in list_keys(tree.fetch, "/bkt", prefix, delimiter, after)]

    return run(go())


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(paths, max_size=25),
    empty=st.lists(paths, max_size=3),
    prefix=st.sampled_from(["", "a", "a/", "a-", "ab/a", "b/", "zz", "a/a/"]),
    delimiter=st.sampled_from([None, "/", "-"]),
    start=st.integers(min_value=-1, max_value=40),
)
def test_listing_matches_s3_order_prefixes_delimiters_and_markers(
    files, empty, prefix, delimiter, start
) -> None:
    tree = Tree()
    for parts in files:
        tree.add(parts, directory=False)
    for parts in empty:
        tree.add(parts, directory=True)
    keys = tree.keys()
    everything = reference(keys, prefix, delimiter, None)
    assert listed(tree, prefix, delimiter, None) == everything
    if 0 <= start < len(everything):  # resume after any item, as a marker or a token does
        after = everything[start]
        assert listed(tree, prefix, delimiter, after) == reference(keys, prefix, delimiter, after)


def test_slash_delimited_listing_reads_only_the_prefix_directory() -> None:
    tree = Tree()
    for top in NAMES:
        for name in NAMES:
            tree.add([top, name], directory=False)
    assert listed(tree, "", "/", None) == sorted(n + "/" for n in NAMES)
    assert tree.fetches == 4  # 10 names in pages of 3; no subdirectory was opened


def test_the_start_name_helpers() -> None:
    assert first_name("ab/c/d") == "ab"
    assert first_name("a-b/c") == "a"  # the directory "a" holds keys a/... above a-b
    assert name_before("b") < "b" and name_before("b") > "a" + "\U0010ffff" * 255
