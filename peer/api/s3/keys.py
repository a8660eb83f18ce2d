"""S3 credentials: access key ids and secrets, each acting as a qfs user.

SigV4 needs the server to know the secret (it recomputes the signature), so, unlike a bearer
token's keyed hash, the secret itself is stored, encrypted: each key is a replicated record
``s3k:<access key id>`` (placed on the ring by its own key, like tokens) holding the user, the
groups and the secret sealed with AES-256-GCM (random 96-bit nonce, the key id as associated
data). The AES key is derived from the admin token (BLAKE3 derive-key mode, its own context),
so a copy of a record store reveals no secret without the admin token; changing the admin
token makes every S3 key unusable (create new ones).

Revocation is a tombstone written to W replicas; each peer re-reads a key with quorum R after
CACHE_SECONDS, so a revoked key is refused everywhere within CACHE_SECONDS plus one read.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3
import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.api.auth import CACHE_LIMIT, CACHE_SECONDS, MAX_GROUPS
from peer.coordinator import Coordinator
from peer.errors import BadRequest, NotFound
from peer.permissions import Identity, check_name
from peer.quorum import context_of, live
from storage.records import Sibling

KEY_PREFIX = "s3k:"
SEAL_CONTEXT = "quorumfs 2026-12 s3 secret sealing"
ACCESS_KEY = re.compile(r"QFS[A-Z0-9]{17}")
_ALPHABET = string.ascii_uppercase + string.digits


def key_record(access_key: str) -> str:
    """Record key of the S3 key `access_key`."""
    return KEY_PREFIX + access_key


@dataclass(frozen=True)
class S3Key:
    """One credential as a peer holds it after unsealing."""

    access_key: str
    user: str
    groups: tuple[str, ...]
    secret: str

    def identity(self) -> Identity:
        """The qfs user requests signed with this key act as (never an admin)."""
        return Identity(self.user, frozenset(self.groups))


class S3Keys:
    """Creates, lists, revokes and looks up S3 keys through `coordinator`'s quorums."""

    def __init__(
        self, admin_token: str, coordinator: Coordinator, clock: Callable[[], float]
    ) -> None:
        sealing = blake3.blake3(admin_token.encode(), derive_key_context=SEAL_CONTEXT).digest()
        self._aead = AESGCM(sealing)
        self.c = coordinator
        self._clock = clock
        self._cache: dict[str, tuple[float, S3Key | None]] = {}

    def _seal(self, access_key: str, user: str, groups: list[str], secret: str) -> bytes:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), access_key.encode())
        return cbor2.dumps({"user": user, "groups": groups, "nonce": nonce, "sealed": sealed})

    def _unseal(self, access_key: str, data: bytes) -> S3Key | None:
        try:
            fields = cbor2.loads(data)
            secret = self._aead.decrypt(fields["nonce"], fields["sealed"], access_key.encode())
            return S3Key(
                access_key,
                str(fields["user"]),
                tuple(str(g) for g in fields["groups"]),
                secret.decode(),
            )
        except Exception:  # InvalidTag (sealed under another admin token), or damaged
            return None

    async def lookup(self, access_key: str) -> S3Key | None:
        """The live key `access_key`, or None (unknown, revoked or unreadable)."""
        if not ACCESS_KEY.fullmatch(access_key):
            return None
        now = self._clock()
        cached = self._cache.get(access_key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        record = key_record(access_key)
        (siblings,) = await self.c.read_records(record, [record], self.c.settings.r)
        found = self._current(access_key, siblings)
        self._cache.pop(access_key, None)
        self._cache[access_key] = (now, found)
        while len(self._cache) > CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]
        return found

    def _current(self, access_key: str, siblings: list[Sibling]) -> S3Key | None:
        """Any tombstone wins (a revocation is never undone by a concurrent write)."""
        if not siblings or len(live(siblings)) != len(siblings):
            return None
        return self._unseal(access_key, siblings[0].value or b"")

    async def create(self, body: Any) -> dict[str, Any]:
        """POST /v1/s3/keys {"user","groups"}: a new key; the secret is shown only here."""
        if not isinstance(body, dict) or not set(body) <= {"user", "groups"}:
            raise BadRequest('expected {"user": NAME, "groups": [NAME, ...]}')
        user = check_name("user", body.get("user"))
        groups = body.get("groups", [])
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            raise BadRequest(f"groups must be a list of at most {MAX_GROUPS} names")
        groups = sorted({check_name("group", g) for g in groups})
        access_key = "QFS" + "".join(secrets.choice(_ALPHABET) for _ in range(17))
        secret = secrets.token_urlsafe(30)
        record = key_record(access_key)
        clock = self.c.next_clock(context_of([]), [])
        value = self._seal(access_key, user, groups, secret)
        await self.c.write_records(
            [(record, [(record, Sibling(clock, value))])], self.c.settings.w, "s3 key"
        )
        return {
            "access_key_id": access_key,
            "secret_access_key": secret,
            "user": user,
            "groups": groups,
        }

    async def keys(self) -> list[dict[str, Any]]:
        """GET /v1/s3/keys: every live key without its secret."""
        found = await self.c.scan_everywhere(KEY_PREFIX, self.c.settings.r)
        listed = []
        for record, siblings in sorted(found.items()):
            access_key = record[len(KEY_PREFIX) :]
            key = self._current(access_key, siblings)
            if key is not None:
                listed.append({"id": access_key, "user": key.user, "groups": list(key.groups)})
        return listed

    async def revoke(self, access_key: str) -> None:
        """DELETE /v1/s3/keys/{id}: a tombstone; this peer forgets the key at once."""
        record = key_record(access_key)
        (siblings,) = await self.c.read_records(record, [record], self.c.settings.r)
        if not live(siblings):
            raise NotFound(f"no S3 key {access_key}")
        clock = self.c.next_clock(context_of(siblings), siblings)
        await self.c.write_records(
            [(record, [(record, Sibling(clock, None))])], self.c.settings.w, "s3 key revoke"
        )
        self._cache.pop(access_key, None)
