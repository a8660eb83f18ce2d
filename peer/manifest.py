"""What the cluster stores about files and directories, and the record keys it stores them under.

- A file's manifest lives at key ``f:<path>``, placed on the ring by the path. It holds size,
  mtime, mode, owner, group, the whole-file BLAKE3 hash and either the block list or, for small
  files, the bytes themselves (inline).
- Each directory entry is its own record ``e:<dir>\\0<name>``, placed by the directory's path,
  so a listing is one prefix scan on the directory's replicas and concurrent creates of
  different names never touch the same record. A file's entry carries the file's vector clock,
  so siblings and tombstones of the file show up in its listing too. A directory's entry is the
  directory itself: its owner, group and mode live there, and removing it is a tombstone.
- Metadata-only siblings: a version records the clock of the write that produced its content
  (`content_clock`) and of the write that set its owner, group and mode (`attrs_clock`); None
  means "this version's own clock". A chmod that races with a content write on another peer
  leaves two siblings that `merge_versions` folds into one: the newest content with the newest
  attributes. Only content written concurrently is a conflict.
- `meta` holds what a front end stores with a file's content, as text pairs (the S3 API's
  ETag, Content-Type, x-amz-meta-*); it travels with the content through moves and copies, and
  a file's entry mirrors its "etag" so that a listing needs no manifest reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

import cbor2

from gossip.cbor import BadCBOR, excerpt, loads
from peer.paths import basename, parent
from storage.vclock import VectorClock

INLINE_MAX = 4096
FILE = "file"
DIRECTORY = "dir"
ADMIN = "admin"
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755
MAX_DEPTH = 4  # manifest -> blocks -> block, manifest -> clock


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
class Attrs:
    """Who owns a file or directory and what its mode (permission bits) allows."""

    owner: str
    group: str
    mode: int

    def to_json(self) -> dict[str, str]:
        """The API's fields: mode as an octal string such as "0644"."""
        return {"mode": f"{self.mode:04o}", "owner": self.owner, "group": self.group}


ROOT_ATTRS = Attrs(ADMIN, ADMIN, 0o1777)
"""The root directory has no entry: it belongs to the admin and, like /tmp, anyone may create
in it while only an entry's owner (or an admin) may remove or rename it (the sticky bit)."""


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
    owner: str = ADMIN
    group: str = ADMIN
    writer: str = ""
    content_clock: VectorClock | None = None
    attrs_clock: VectorClock | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def attrs(self) -> Attrs:
        """Owner, group and mode."""
        return Attrs(self.owner, self.group, self.mode)

    def meta_value(self, name: str) -> str | None:
        """The value `name` in `meta`, if set."""
        return next((v for k, v in self.meta if k == name), None)

    def with_attrs(self, attrs: Attrs) -> Manifest:
        """This manifest with other owner, group and mode."""
        return replace(self, owner=attrs.owner, group=attrs.group, mode=attrs.mode)

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
                **_clocks(self.content_clock, self.attrs_clock),
                **({"meta": [list(pair) for pair in self.meta]} if self.meta else {}),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse stored or received bytes (bounded, every field type-checked, nothing
        coerced); ValueError says what is malformed."""
        fields = _decode_map(data, "manifest")
        try:
            blocks = tuple(_block(raw) for raw in _field(fields, "blocks", list))
            manifest = cls(
                size=_field(fields, "size", int),
                mtime=float(_field(fields, "mtime", (float, int))),
                mode=_field(fields, "mode", int),
                blake3=_field(fields, "blake3", str),
                blocks=blocks,
                inline=_field(fields, "inline", bytes, None),
                owner=_field(fields, "owner", str, ADMIN),
                group=_field(fields, "group", str, ADMIN),
                writer=_field(fields, "writer", str, ""),
                meta=_meta(fields),
                **_decode_clocks(fields),
            )
        except ValueError as e:
            raise ValueError(f"malformed manifest: {e}") from None
        stored = (
            len(manifest.inline) if manifest.inline is not None else sum(b.size for b in blocks)
        )
        if stored != manifest.size:
            raise ValueError(f"malformed manifest: {stored} bytes stored for size {manifest.size}")
        return manifest


@dataclass(frozen=True)
class Entry:
    """A name in a directory: a file (mirroring its manifest's size, mtime and attributes) or
    a directory (whose attributes live only here). `moving_from` marks a directory that an
    unfinished move is filling from that source path."""

    type: str
    size: int = 0
    mtime: float = 0.0
    mode: int = FILE_MODE
    owner: str = ADMIN
    group: str = ADMIN
    content_clock: VectorClock | None = None
    attrs_clock: VectorClock | None = None
    moving_from: str | None = None
    etag: str | None = None

    @property
    def attrs(self) -> Attrs:
        """Owner, group and mode."""
        return Attrs(self.owner, self.group, self.mode)

    def with_attrs(self, attrs: Attrs) -> Entry:
        """This entry with other owner, group and mode."""
        return replace(self, owner=attrs.owner, group=attrs.group, mode=attrs.mode)

    @classmethod
    def of_file(cls, manifest: Manifest) -> Entry:
        """The listing entry of a file version."""
        return cls(
            FILE,
            manifest.size,
            manifest.mtime,
            manifest.mode,
            manifest.owner,
            manifest.group,
            manifest.content_clock,
            manifest.attrs_clock,
            etag=manifest.meta_value("etag"),
        )

    @classmethod
    def directory(cls, attrs: Attrs, mtime: float, moving_from: str | None = None) -> Entry:
        """A directory entry with these attributes."""
        return cls(
            DIRECTORY, 0, mtime, attrs.mode, attrs.owner, attrs.group, moving_from=moving_from
        )

    def encode(self) -> bytes:
        """CBOR bytes for the record store and the wire."""
        fields: dict[str, Any] = {
            "type": self.type,
            "size": self.size,
            "mtime": self.mtime,
            "mode": self.mode,
            "owner": self.owner,
            "group": self.group,
            **_clocks(self.content_clock, self.attrs_clock),
        }
        if self.moving_from is not None:
            fields["moving_from"] = self.moving_from
        if self.etag is not None:
            fields["etag"] = self.etag
        return cbor2.dumps(fields)

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse stored or received bytes (bounded, every field type-checked, nothing
        coerced); ValueError says what is malformed."""
        fields = _decode_map(data, "directory entry")
        try:
            kind = _field(fields, "type", str)
            if kind not in (FILE, DIRECTORY):
                raise ValueError(f"type {excerpt(kind)}")
            return cls(
                kind,
                _field(fields, "size", int, 0),
                float(_field(fields, "mtime", (float, int), 0.0)),
                _field(fields, "mode", int, FILE_MODE if kind == FILE else DIRECTORY_MODE),
                _field(fields, "owner", str, ADMIN),
                _field(fields, "group", str, ADMIN),
                moving_from=_field(fields, "moving_from", str, None),
                etag=_field(fields, "etag", str, None),
                **_decode_clocks(fields),
            )
        except ValueError as e:
            raise ValueError(f"malformed directory entry: {e}") from None


class _Versioned(Protocol):
    @property
    def mtime(self) -> float: ...

    @property
    def content_clock(self) -> VectorClock | None: ...

    @property
    def attrs_clock(self) -> VectorClock | None: ...


V = TypeVar("V", bound=_Versioned)


@dataclass(frozen=True)
class Merged(Generic[V]):
    """Live siblings folded together: one head per concurrently written content (more than one
    is a real conflict) and the version whose attributes are newest."""

    heads: list[tuple[VectorClock, V]]
    attrs_from: V
    attrs_clock: VectorClock


def merge_versions(versions: Sequence[tuple[VectorClock, V]]) -> Merged[V]:
    """Fold live siblings (clock, value): contents whose content clock another content clock
    descends are dropped, equal ones kept once; the attributes come from the version with the
    newest attrs clock (concurrent attribute changes: the later mtime, then the larger clock
    text, so every reader picks the same one)."""
    if not versions:
        raise ValueError("nothing to merge")
    content = [(v.content_clock or clock, clock, v) for clock, v in versions]
    heads: list[tuple[VectorClock, V]] = []
    seen: list[VectorClock] = []
    for cc, clock, value in content:
        if any(other != cc and other.descends(cc) for other, _, _ in content) or cc in seen:
            continue
        seen.append(cc)
        heads.append((clock, value))
    attrs = [(v.attrs_clock or clock, v) for clock, v in versions]
    newest = [(ac, v) for ac, v in attrs if not any(o != ac and o.descends(ac) for o, _ in attrs)]
    attrs_clock, winner = max(newest, key=lambda item: (item[1].mtime, item[0].encode()))
    return Merged(heads, winner, attrs_clock)


def _clocks(content: VectorClock | None, attrs: VectorClock | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if content is not None:
        fields["content_clock"] = content.to_cbor()
    if attrs is not None:
        fields["attrs_clock"] = attrs.to_cbor()
    return fields


def _decode_clocks(fields: dict[str, Any]) -> dict[str, VectorClock | None]:
    return {
        name: None if fields.get(name) is None else VectorClock.from_cbor(fields[name])
        for name in ("content_clock", "attrs_clock")
    }


_REQUIRED: Any = object()


MAX_META = 64  # pairs a front end may store with a file


def _meta(fields: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The `meta` text pairs, checked: at most MAX_META, each two strings."""
    pairs = _field(fields, "meta", list, [])
    if len(pairs) > MAX_META:
        raise ValueError(f"meta has {len(pairs)} pairs, more than {MAX_META}")
    if not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise ValueError("meta must be pairs of strings")
    return tuple((k, v) for k, v in pairs)


def _field(
    fields: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _REQUIRED
) -> Any:
    """``fields[name]`` if it is exactly of ``kind`` (a bool is no int); ``default`` when
    absent or null; ValueError naming the field otherwise."""
    value = fields.get(name)
    if value is None:
        if default is _REQUIRED:
            raise ValueError(f"missing {name}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        raise ValueError(f"{name} is a {type(value).__name__}, not {kinds[0].__name__}")
    return value


def _block(raw: Any) -> Block:
    if type(raw) is not list or len(raw) != 2 or type(raw[0]) is not str or type(raw[1]) is not int:
        raise ValueError("a block must be [hash, size]")
    return Block(raw[0], raw[1])


def _decode_map(data: bytes, what: str) -> dict[str, Any]:
    """The bounded decoder (no tags; a manifest nests at most blocks -> block)."""
    try:
        fields = loads(data, max_depth=MAX_DEPTH)
    except BadCBOR as e:
        raise ValueError(f"malformed {what}: {e}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"malformed {what}: not a map")
    return fields
