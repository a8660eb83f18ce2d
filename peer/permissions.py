"""Who may do what: the HDFS/POSIX permission model as pure functions.

Each file and directory has an owner, a group and a mode. A request's identity gets the owner
bits when it is the owner, else the group bits when it belongs to the group, else the other
bits. Admins pass every check (the HDFS superuser). The rules (design.md):

- read a file: r on it; list a directory: r on it; both need x on every ancestor (traversal);
- write an existing file: w on it; create or remove an entry: w and x on its directory, and in
  a sticky directory (mode 1000) only the entry's owner or the directory's owner may remove or
  rename it;
- a copy or move that replaces an existing destination (POSIX rename/copy): w on each file it
  replaces, with the sticky rule against that file's directory, and w and x on each existing
  directory it writes into; the replaced entry keeps its owner, group and mode;
- change the mode: the owner or an admin; change the owner: an admin; change the group: an
  admin, or the owner to a group the owner belongs to;
- a new entry's owner is the creating user and its group is its directory's (BSD rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from peer.errors import BadRequest, Forbidden
from peer.manifest import ADMIN, Attrs

READ = 4
WRITE = 2
EXECUTE = 1
STICKY = 0o1000
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
_WANTS = {READ: "read", WRITE: "write", EXECUTE: "search (x)"}


@dataclass(frozen=True)
class Identity:
    """The user a request acts for."""

    user: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    def to_json(self) -> dict[str, object]:
        """The body of GET /v1/whoami."""
        return {"user": self.user, "groups": sorted(self.groups), "admin": self.admin}


ADMIN_IDENTITY = Identity(ADMIN, frozenset({ADMIN}), admin=True)


def check_name(kind: str, name: object) -> str:
    """A user or group name, or BadRequest naming what is wrong with it."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(
            f"{kind} {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-' "
            "(not starting with '.', '@' or '-')"
        )
    return name


def parse_mode(text: object) -> int:
    """An octal mode string such as "0640", or BadRequest."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-7]{1,4}", text):
        raise BadRequest(f"mode {text!r} is not an octal number such as 0644")
    return int(text, 8)


def allows(identity: Identity, attrs: Attrs, want: int) -> bool:
    """Whether `identity` has every bit of `want` (READ|WRITE|EXECUTE) on `attrs`."""
    if identity.admin:
        return True
    if identity.user == attrs.owner:
        bits = attrs.mode >> 6
    elif attrs.group in identity.groups:
        bits = attrs.mode >> 3
    else:
        bits = attrs.mode
    return bits & want == want


def require(identity: Identity, attrs: Attrs, want: int, path: str) -> None:
    """Forbidden naming the path and the missing permission unless `allows`."""
    if not allows(identity, attrs, want):
        names = " and ".join(name for bit, name in _WANTS.items() if want & bit)
        raise Forbidden(
            f"{identity.user} has no {names} permission on {path} "
            f"({attrs.owner}:{attrs.group} {attrs.mode:04o})"
        )


def require_traverse(identity: Identity, ancestors: Iterable[tuple[str, Attrs | None]]) -> None:
    """x on every (path, attrs) directory above the target, outermost first. A directory whose
    attributes are unknown (None: no entry was read for it) fails closed but for an admin."""
    for path, attrs in ancestors:
        if attrs is None:
            if not identity.admin:
                raise Forbidden(
                    f"{path} has no directory entry on the replicas read (removed, or not "
                    "replicated there yet): its permissions are unknown, so only an admin may "
                    "reach what is below it"
                )
            continue
        require(identity, attrs, EXECUTE, path)


def require_remove(
    identity: Identity, directory: str, dir_attrs: Attrs, entry: str, entry_attrs: Attrs
) -> None:
    """May `identity` remove (or rename away) `entry` from `directory`?"""
    require(identity, dir_attrs, WRITE | EXECUTE, directory)
    _require_sticky(identity, directory, dir_attrs, entry, entry_attrs, "remove or rename")


def require_replace(
    identity: Identity, directory: str, dir_attrs: Attrs, entry: str, entry_attrs: Attrs
) -> None:
    """May `identity` replace the existing file `entry` of `directory` by a copy or a move?
    w on the file, and in a sticky directory only its owner or the directory's owner."""
    require(identity, entry_attrs, WRITE, entry)
    _require_sticky(identity, directory, dir_attrs, entry, entry_attrs, "replace")


def _require_sticky(
    identity: Identity, directory: str, dir_attrs: Attrs, entry: str, entry_attrs: Attrs, verb: str
) -> None:
    if (
        dir_attrs.mode & STICKY
        and not identity.admin
        and identity.user not in (dir_attrs.owner, entry_attrs.owner)
    ):
        raise Forbidden(
            f"{directory} is sticky: only {entry_attrs.owner} or {dir_attrs.owner} "
            f"may {verb} {entry}"
        )


def new_attrs(identity: Identity, parent: Attrs, mode: int) -> Attrs:
    """Attributes of an entry `identity` creates in a directory with `parent` attributes."""
    return Attrs(identity.user, parent.group, mode)


def changed_attrs(
    identity: Identity,
    current: Attrs,
    path: str,
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
) -> Attrs:
    """The attributes after a chmod/chown by `identity`, or Forbidden saying who may."""
    is_owner = identity.admin or identity.user == current.owner
    if mode is not None and mode != current.mode and not is_owner:
        raise Forbidden(f"only {current.owner} or an admin may change the mode of {path}")
    if owner is not None and owner != current.owner and not identity.admin:
        raise Forbidden(f"only an admin may change the owner of {path}")
    if (
        group is not None
        and group != current.group
        and not identity.admin
        and (not is_owner or group not in identity.groups)
    ):
        raise Forbidden(
            f"only an admin, or {current.owner} to one of their own groups, "
            f"may change the group of {path}"
        )
    return Attrs(
        current.owner if owner is None else owner,
        current.group if group is None else group,
        current.mode if mode is None else mode,
    )
