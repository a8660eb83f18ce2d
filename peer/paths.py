"""File-system paths as the cluster stores them: absolute, `/`-separated, normalised UTF-8.

Every path that crosses the HTTP boundary goes through `normalize`; anything it rejects is a
client error (HTTP 400) naming the problem. Stored paths never contain `.`/`..`, empty names,
NUL or other control characters.
"""

from __future__ import annotations

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
ROOT = "/"


class PathError(ValueError):
    """A path that cannot name anything in the store."""


def normalize(raw: str) -> str:
    """`raw` as a canonical absolute path ("/a/b"); the root is "/".

    A leading slash is optional and one trailing slash is ignored ("a/b/" is "/a/b"); empty
    names ("a//b"), "." and "..", control characters and over-long paths are refused.
    """
    if not isinstance(raw, str):
        raise PathError("path must be text")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathError(f"path longer than {MAX_PATH_BYTES} bytes")
    body = raw.removeprefix("/").removesuffix("/")
    if not body:
        return ROOT
    names = body.split("/")
    for name in names:
        _check_name(name)
    return "/" + "/".join(names)


def _check_name(name: str) -> None:
    if not name:
        raise PathError("empty name in path (two slashes in a row)")
    if name in (".", ".."):
        raise PathError(f"{name!r} is not allowed in a path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise PathError("control character (such as NUL) in path")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError("path is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise PathError(f"name longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")


def parent(path: str) -> str:
    """The directory holding `path` ("/" for top-level entries and for the root itself)."""
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def basename(path: str) -> str:
    """The last name of `path` ("" for the root)."""
    return path.rsplit("/", 1)[1] if path != ROOT else ""


def ancestors(path: str) -> list[str]:
    """Every directory above `path`, outermost first, excluding the root ("/a/b/c" -> /a, /a/b)."""
    names = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(names[: i + 1]) for i in range(len(names))]
