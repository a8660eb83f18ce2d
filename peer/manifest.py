"""What the cluster stores about files and directories, and the record keys it stores them under.

- A file's manifest lives at key ``f:<path>``, placed on the ring by the path. It holds size,
  mtime, mode, owner, group, the whole-file BLAKE3 hash and either the block list or, for small
  files, the bytes themselves (inline).
- Each directory entry is its own record ``e:<dir>\\0<name>``, placed by the directory's path,
  so a listing is one prefix scan on the directory's replicas and concurrent creates of
  different names never touch the same record. A file's entry carries the file's vector clock,
  so siblings and tombstones of the file show up in its listing too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from peer.paths import basename, parent

INLINE_MAX = 4096
FILE = "file"
DIRECTORY = "dir"


def manifest_key(path: str) -> str:
    """Record key of the manifest of the file at `path`."""
    return "f:" + path


def entry_prefix(directory: str) -> str:
    """Record-key prefix shared by every entry of `directory`."""
    return "e:" + directory + "\0"


def entry_key(path: str) -> str:
    """Record key of `path`'s entry in its parent directory."""
    return entry_prefix(parent(path)) + basename(path)


def entry_name(key: str) -> str:
    """The entry name in an entry record key."""
    return key.rsplit("\0", 1)[1]


@dataclass(frozen=True)
class Block:
    """One block of a file: its BLAKE3 hex name and its length."""

    hash: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """One version of a file's metadata (the vector clock lives beside it in the record)."""

    size: int
    mtime: float
    mode: int
    blake3: str
    blocks: tuple[Block, ...] = ()
    inline: bytes | None = None
    owner: str = "admin"
    group: str = "admin"
    writer: str = ""

    def encode(self) -> bytes:
        """CBOR bytes for the record store and the wire."""
        return cbor2.dumps(
            {
                "size": self.size,
                "mtime": self.mtime,
                "mode": self.mode,
                "blake3": self.blake3,
                "blocks": [[b.hash, b.size] for b in self.blocks],
                "inline": self.inline,
                "owner": self.owner,
                "group": self.group,
                "writer": self.writer,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse stored or received bytes; ValueError says what is malformed."""
        fields = _decode_map(data, "manifest")
        try:
            blocks = tuple(Block(str(h), int(s)) for h, s in fields["blocks"])
            manifest = cls(
                size=int(fields["size"]),
                mtime=float(fields["mtime"]),
                mode=int(fields["mode"]),
                blake3=str(fields["blake3"]),
                blocks=blocks,
                inline=fields.get("inline"),
                owner=str(fields.get("owner", "admin")),
                group=str(fields.get("group", "admin")),
                writer=str(fields.get("writer", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed manifest: {e!r}") from None
        stored = (
            len(manifest.inline) if manifest.inline is not None else sum(b.size for b in blocks)
        )
        if stored != manifest.size:
            raise ValueError(f"malformed manifest: {stored} bytes stored for size {manifest.size}")
        return manifest


@dataclass(frozen=True)
class Entry:
    """A name in a directory: a file (with its size and mtime at last write) or a directory."""

    type: str
    size: int = 0
    mtime: float = 0.0

    def encode(self) -> bytes:
        """CBOR bytes for the record store and the wire."""
        return cbor2.dumps({"type": self.type, "size": self.size, "mtime": self.mtime})

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse stored or received bytes; ValueError says what is malformed."""
        fields = _decode_map(data, "directory entry")
        kind = fields.get("type")
        if kind not in (FILE, DIRECTORY):
            raise ValueError(f"malformed directory entry: type {kind!r}")
        try:
            return cls(kind, int(fields.get("size", 0)), float(fields.get("mtime", 0.0)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"malformed directory entry: {e!r}") from None


def _decode_map(data: bytes, what: str) -> dict[str, Any]:
    try:
        fields = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for bad input
        raise ValueError(f"malformed {what}: {e}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"malformed {what}: not a map")
    return fields
