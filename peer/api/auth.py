"""Client identity: bearer tokens, checked on every peer.

The admin token is the one in `--admin-token-file` (every peer of a cluster is given the same
file). User tokens look like ``qfs_<id>_<secret>``; the cluster keeps, per token, a replicated
record ``t:<id>`` (placed on the ring by its own key, like every record that is not a manifest
or an entry, so anti-entropy keeps it on its homes; listing asks every peer) holding
the user, the groups, the admin flag and a keyed BLAKE3 hash of the secret, never the secret.
The hash key is derived from the admin token (BLAKE3 derive-key mode), so a stolen record store
does not let anyone test guesses offline without the admin token; changing the admin token
invalidates every user token. Digests are compared in constant time.

Revocation writes a tombstone through the coordinator's quorum (W replicas). Each peer caches a
token's record for at most CACHE_SECONDS, then reads it again with quorum R (R + W > N sees the
tombstone), so a revoked token is refused everywhere within CACHE_SECONDS plus one read.

The admin token file must be private to its owner (as ssh wants of a private key) and the token
at least MIN_ADMIN_TOKEN characters. Failed authentications are rate-limited per client address
(`FailureLimiter`): past a burst, that address gets 429 with Retry-After, whatever token it sends,
so guessing costs a second per guess.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import cbor2

from gossip.cbor import excerpt
from gossip.cbor import loads as cbor_loads
from gossip.wire import read_private_file
from peer.coordinator import Coordinator
from peer.errors import BadRequest, NotFound, TooManyRequests, Unauthorized
from peer.permissions import ADMIN_IDENTITY, Identity, check_name
from peer.quorum import context_of, live
from storage.records import Sibling

TOKEN_PREFIX = "t:"
CACHE_SECONDS = 2.0
CACHE_LIMIT = 10_000
MAX_HEADER = 1024
MAX_GROUPS = 32
MIN_ADMIN_TOKEN = 16
FAILURE_BURST = 20  # failed authentications a client address may make at once
FAILURE_REFILL = 1.0  # seconds to earn one more
LIMITED_CLIENTS = 10_000  # addresses remembered; the least recently failing one goes first
HASH_CONTEXT = "quorumfs 2026-11 user token hash"
_BEARER = re.compile(r"Bearer +([!-~]{1,512})", re.IGNORECASE)
_USER_TOKEN = re.compile(r"qfs_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def token_key(token_id: str) -> str:
    """Record key of the token `token_id`."""
    return TOKEN_PREFIX + token_id


def bearer_token(header: bytes | None) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header, or Unauthorized saying why."""
    if header is None:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer TOKEN'")
    if len(header) > MAX_HEADER:
        raise Unauthorized(f"Authorization header longer than {MAX_HEADER} bytes")
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        raise Unauthorized("Authorization header is not ASCII") from None
    match = _BEARER.fullmatch(text)
    if match is None:
        raise Unauthorized("malformed Authorization header: expected 'Bearer TOKEN'")
    return match.group(1)


def load_admin_token(path: Path) -> str:
    """The admin token in `path`; ValueError when group or others may read or write the file
    (anyone who reads it is the admin) or when it cannot be read."""
    raw = read_private_file(path, "admin token", MAX_HEADER + 1)
    return raw.decode("ascii", "replace")


class FailureLimiter:
    """A token bucket per client address for failed authentications: each failure takes one
    of `burst`, one comes back every `refill` seconds; an address with none left waits."""

    def __init__(
        self,
        clock: Callable[[], float],
        burst: int = FAILURE_BURST,
        refill: float = FAILURE_REFILL,
        limit: int = LIMITED_CLIENTS,
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._refill = refill
        self._limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (left, when)

    def _left(self, client: str, now: float) -> float:
        left, when = self._buckets.get(client, (self._burst, now))
        return min(self._burst, left + (now - when) / self._refill)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until `client` may try again; None when it may now."""
        left = self._left(client, self._clock())
        return None if left >= 1 else max(1, math.ceil((1 - left) * self._refill))

    def failed(self, client: str) -> None:
        """Count one failed authentication of `client`."""
        now = self._clock()
        left = self._left(client, now) - 1
        self._buckets.pop(client, None)
        self._buckets[client] = (left, now)
        while len(self._buckets) > self._limit:
            del self._buckets[next(iter(self._buckets))]


@dataclass(frozen=True)
class TokenRecord:
    """What the cluster stores about one user token."""

    user: str
    groups: tuple[str, ...]
    admin: bool
    digest: bytes

    def encode(self) -> bytes:
        """CBOR bytes for the record store."""
        return cbor2.dumps(
            {"user": self.user, "groups": list(self.groups), "admin": self.admin, "d": self.digest}
        )

    @classmethod
    def decode(cls, data: bytes) -> TokenRecord:
        """Parse a record (it may come from any peer: bounded, no tags); ValueError when
        malformed."""
        try:
            fields = cbor_loads(data, max_depth=2, max_items=MAX_GROUPS + 16)
            user, groups = fields["user"], fields["groups"]
            admin, digest = fields["admin"], fields["d"]
        except (ValueError, TypeError, KeyError) as e:  # BadCBOR is a ValueError
            raise ValueError(f"malformed token record: {excerpt(str(e))}") from None
        if not (
            isinstance(user, str)
            and isinstance(groups, list)
            and all(isinstance(g, str) for g in groups)
            and isinstance(admin, bool)
            and isinstance(digest, bytes)
        ):
            raise ValueError("malformed token record: wrong field types")
        return cls(user, tuple(groups), admin, digest)

    def identity(self) -> Identity:
        """The identity a request with this token acts as."""
        return Identity(self.user, frozenset(self.groups), self.admin)


class Authenticator:
    """Checks bearer tokens and manages user tokens through `coordinator`'s quorums."""

    def __init__(
        self, admin_token: str, coordinator: Coordinator, clock: Callable[[], float]
    ) -> None:
        if len(admin_token) < MIN_ADMIN_TOKEN or not _BEARER.fullmatch("Bearer " + admin_token):
            raise ValueError(
                f"admin token file: the token must be {MIN_ADMIN_TOKEN}-512 printable ASCII "
                f"characters without spaces (it has {len(admin_token)}); make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        self._admin = admin_token.encode()
        self._key = blake3.blake3(self._admin, derive_key_context=HASH_CONTEXT).digest()
        self.c = coordinator
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self.limiter = FailureLimiter(clock)
        self.failures = 0
        """Requests whose token was refused (401)."""
        self.limited = 0
        """Requests refused unchecked because their address failed too often (429)."""

    def _digest(self, secret: str) -> bytes:
        return blake3.blake3(secret.encode(), key=self._key).digest()

    async def identify(self, header: bytes | None, client: str = "") -> Identity:
        """The identity of a request's Authorization header; Unauthorized when it has none,
        TooManyRequests when the `client` address failed too often to be listened to."""
        if header is None:
            bearer_token(header)  # Unauthorized, and no guess was made: nothing to count
        wait = self.limiter.retry_after(client)
        if wait is not None:
            self.limited += 1
            raise TooManyRequests(
                f"too many failed authentications from {client}: try again in {wait} s",
                retry_after=wait,
            )
        try:
            return await self._identify(header)
        except Unauthorized:
            self.failures += 1
            self.limiter.failed(client)
            raise

    async def _identify(self, header: bytes | None) -> Identity:
        token = bearer_token(header)
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN_IDENTITY
        match = _USER_TOKEN.fullmatch(token)
        if match is None:
            raise Unauthorized("unknown token")
        token_id, secret = match.groups()
        record = await self._record(token_id)
        if record is None or not hmac.compare_digest(record.digest, self._digest(secret)):
            raise Unauthorized("unknown or revoked token")
        return record.identity()

    async def _record(self, token_id: str) -> TokenRecord | None:
        now = self._clock()
        cached = self._cache.get(token_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        key = token_key(token_id)
        (siblings,) = await self.c.read_records(key, [key], self.c.settings.r)
        record = _current(siblings)
        self._cache.pop(token_id, None)
        self._cache[token_id] = (now, record)
        while len(self._cache) > CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]
        return record

    async def create(self, body: Any) -> dict[str, Any]:
        """POST /v1/tokens: a new token for {"user","groups","admin"}; the secret shown once."""
        if not isinstance(body, dict) or not set(body) <= {"user", "groups", "admin"}:
            raise BadRequest('expected {"user": NAME, "groups": [NAME, ...], "admin": false}')
        user = check_name("user", body.get("user"))
        groups = body.get("groups", [])
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            raise BadRequest(f"groups must be a list of at most {MAX_GROUPS} names")
        groups = sorted({check_name("group", g) for g in groups})
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise BadRequest("admin must be true or false")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        record = TokenRecord(user, tuple(groups), admin, self._digest(secret))
        clock = self.c.next_clock(context_of([]), [])
        item = (token_key(token_id), Sibling(clock, record.encode()))
        await self.c.write_records([(item[0], [item])], self.c.settings.w, "token")
        return {"id": token_id, "user": user, "token": f"qfs_{token_id}_{secret}"}

    async def tokens(self) -> list[dict[str, Any]]:
        """GET /v1/tokens: every live token without its secret or digest."""
        found = await self.c.scan_everywhere(TOKEN_PREFIX, self.c.settings.r)
        listed = []
        for key, siblings in sorted(found.items()):
            record = _current(siblings)
            if record is not None:
                listed.append(
                    {
                        "id": key[len(TOKEN_PREFIX) :],
                        "user": record.user,
                        "groups": list(record.groups),
                        "admin": record.admin,
                    }
                )
        return listed

    async def revoke(self, token_id: str) -> None:
        """DELETE /v1/tokens/{id}: a tombstone; this peer forgets the token at once."""
        key = token_key(token_id)
        (siblings,) = await self.c.read_records(key, [key], self.c.settings.r)
        if _current(siblings) is None:
            raise NotFound(f"no token {token_id}")
        clock = self.c.next_clock(context_of(siblings), siblings)
        await self.c.write_records(
            [(key, [(key, Sibling(clock, None))])], self.c.settings.w, "revoke"
        )
        self._cache.pop(token_id, None)


def _current(siblings: list[Sibling]) -> TokenRecord | None:
    """The token a record holds; None when revoked (any tombstone wins) or unreadable."""
    if len(live(siblings)) != len(siblings) or not siblings:
        return None
    try:
        return TokenRecord.decode(siblings[0].value or b"")
    except ValueError:
        return None
