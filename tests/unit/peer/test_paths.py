"""Path normalisation: the one gate every client path passes."""

import pytest

from peer.paths import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    PathError,
    ancestors,
    basename,
    normalize,
    parent,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", "/"),
        ("/", "/"),
        ("a", "/a"),
        ("/a/b", "/a/b"),
        ("a/b/", "/a/b"),
        ("/ünï cødé/файл.txt", "/ünï cødé/файл.txt"),
        ("/a/.hidden", "/a/.hidden"),
        ("/a/...", "/a/..."),
    ],
)
def test_normalize_accepts(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/a//b", "empty name"),
        ("/a/../b", "'..'"),
        ("/a/./b", "'.'"),
        ("..", "'..'"),
        ("/a\0b", "control character"),
        ("/a\nb", "control character"),
        ("/\ud800", "UTF-8"),
        ("/" + "x" * (MAX_NAME_BYTES + 1), "name longer"),
        ("/" + "a/" * (MAX_PATH_BYTES // 2 + 1), "path longer"),
    ],
)
def test_normalize_rejects_with_reason(raw: str, reason: str) -> None:
    with pytest.raises(PathError, match=reason):
        normalize(raw)


def test_parent_basename_ancestors() -> None:
    assert parent("/a/b/c") == "/a/b"
    assert parent("/a") == "/"
    assert parent("/") == "/"
    assert basename("/a/b") == "b"
    assert basename("/") == ""
    assert ancestors("/a/b/c") == ["/a", "/a/b"]
    assert ancestors("/a") == []
