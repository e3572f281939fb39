"""Personal access tokens (table ``api_tokens``): ``moorage_pat_<prefix>_<secret>``.

The prefix (12 hex characters) is public and finds the row; the secret is 256 random bits. The
token is stored as the SHA-256 of its whole text, compared in constant time. A password hash
(argon2) would add nothing against a 256-bit secret — nobody can enumerate that space, with or
without a slow hash — while costing tens of milliseconds on every request that presents it (as
Basic on /v2 does, once per blob); robots' secrets are stored the same way. The token text is
returned once, at creation, and cannot be recovered.

Scopes limit what a token may do on top of its user's own rights (never more):
``registry:pull``, ``registry:push``, ``registry:delete`` (the /v2 protocol and /auth/token),
``api:read`` (GET on /api/v1) and ``api:write`` (changes through /api/v1, including repository
administration such as permissions).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import access_queries as aq
from ..db import session_queries as sq
from ..db.engine import reader, writer
from ..db.queries import now
from .passwords import hash_secret

PAT_PREFIX = "moorage_pat_"
PAT_RE = re.compile(r"^moorage_pat_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
PAT_SCOPES = ("registry:pull", "registry:push", "registry:delete", "api:read", "api:write")
TOUCH_EVERY = 60.0


def looks_like_pat(value: str) -> bool:
    return value.startswith(PAT_PREFIX)


@dataclass(frozen=True, slots=True)
class PATOwner:
    token_id: int
    user_id: int
    username: str
    is_admin: bool
    scopes: frozenset[str]
    token_version: int = 0
    created: int | None = None  # the owner's account_stamp


class PersonalTokens:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._read = reader(engine)  # built once: the same pool, never SQLite's write lock
        self._touched: dict[int, float] = {}

    @staticmethod
    def new_token() -> tuple[str, str]:
        """(prefix, full token text)."""
        prefix = secrets.token_hex(6)
        return prefix, f"{PAT_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"

    async def create(
        self, user_id: int, name: str, scopes: list[str], expires_at: datetime | None
    ) -> tuple[str, sq.TokenRow]:
        """Store a new token; returns (token text — shown once, the row)."""
        prefix, token = self.new_token()
        async with writer(self.engine).begin() as conn:
            token_id = await sq.insert_token(
                conn, user_id, name, prefix, hash_secret(token), scopes, expires_at
            )
            row = await sq.token_by_id(conn, user_id, token_id)
        assert row is not None
        return token, row

    async def verify(self, token: str) -> PATOwner | None:
        """The owner of a usable token, or None (malformed, unknown, wrong secret, revoked,
        expired, or the user is disabled or gone)."""
        m = PAT_RE.match(token.strip())
        if m is None:
            return None
        async with self._read.connect() as conn:
            row = await sq.token_by_prefix(conn, m.group(1))
            user = await aq.user_by_id(conn, row.user_id) if row is not None else None
        stored = row.token_hash if row is not None else None
        if not secrets.compare_digest((stored or "0" * 64).encode(), hash_secret(token).encode()):
            return None
        if row is None or user is None or user.disabled or not row.usable(now()):
            return None
        await self._touch(row.id)
        return PATOwner(
            row.id,
            user.id,
            user.username,
            user.is_admin,
            frozenset(row.scopes),
            user.token_version,
            user.created,
        )

    async def current_scopes(self, user_id: int, token_id: int) -> frozenset[str] | None:
        """The scopes of *user_id*'s token *token_id* while it is usable (not revoked, not
        expired), else None: bearer tokens issued for it are re-checked with this."""
        async with self._read.connect() as conn:
            row = await sq.token_by_id(conn, user_id, token_id)
        if row is None or not row.usable(now()):
            return None
        return frozenset(row.scopes)

    async def _touch(self, token_id: int) -> None:
        """last_used_at, written at most once a minute per token and process."""
        mono = time.monotonic()
        if mono - self._touched.get(token_id, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        self._touched[token_id] = mono
        if len(self._touched) > 10_000:
            self._touched.clear()
        async with writer(self.engine).begin() as conn:
            await sq.touch_tokens(conn, {token_id: now()})


def expiry(days: int | None) -> datetime | None:
    return now() + timedelta(days=days) if days else None
