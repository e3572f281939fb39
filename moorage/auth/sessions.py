"""Web UI sessions over table ``web_sessions``, shared by every node.

The browser holds a random 256-bit cookie value; the database holds only its SHA-256 (``id``), so
a copy of the database yields no live cookie. Each session has its own CSRF token (sent back by
forms as ``csrf_token`` and by scripts as the ``X-CSRF-Token`` header). A session ends after
``auth.session.idle_minutes`` without use or ``auth.session.max_hours`` after login, whichever
comes first, and at once when its user is disabled or deleted. ``last_seen_at`` is written at
most once a minute per session, so browsing costs reads, not a write per page.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from ..db import session_queries as sq
from ..db.engine import reader, writer
from ..db.queries import now
from .config import SessionConfig

SESSION_COOKIE = "moorage_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # sha256 hex of the cookie value
    user_id: int
    username: str
    is_admin: bool
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # absolute end (created_at + max_hours)


def session_id(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8", "replace")).hexdigest()


def _plausible(cookie_value: str) -> bool:
    return 20 <= len(cookie_value) <= 128 and cookie_value.isascii()


class SessionStore:
    def __init__(self, engine: AsyncEngine, config: SessionConfig) -> None:
        self.engine = engine
        self._read = reader(engine)  # built once: the same pool, never SQLite's write lock
        self.config = config

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.config.idle_minutes)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.config.max_hours)

    async def create(
        self, user_id: int, client_addr: str | None, user_agent: str | None
    ) -> tuple[str, Session]:
        """A new session for *user_id*: (cookie value to send once, the session)."""
        cookie = secrets.token_urlsafe(32)
        sid, csrf = session_id(cookie), secrets.token_urlsafe(32)
        expires = now() + self.lifetime
        async with writer(self.engine).begin() as conn:
            ts = await sq.insert_session(conn, sid, user_id, csrf, expires, client_addr, user_agent)
            row = await sq.session_by_id(conn, sid)
        assert row is not None
        return cookie, Session(sid, user_id, row.username, row.is_admin, csrf, ts, ts, expires)

    async def lookup(self, cookie_value: str | None) -> Session | None:
        """The live session behind a cookie value, or None (unknown, expired, user disabled)."""
        if not cookie_value or not _plausible(cookie_value):
            return None
        sid = session_id(cookie_value)
        async with self._read.connect() as conn:
            row = await sq.session_by_id(conn, sid)
        if row is None:
            return None
        at = now()
        if row.disabled or row.expires_at <= at or row.last_seen_at + self.idle <= at:
            async with writer(self.engine).begin() as conn:
                await sq.delete_session(conn, sid)
            return None
        seen = row.last_seen_at
        # Use is recorded at most once a minute — more often under a short idle limit, so
        # that a session in use never looks idle.
        if at - seen >= min(TOUCH_EVERY, self.idle / 4):
            async with writer(self.engine).begin() as conn:
                await sq.touch_session(conn, sid, at)
            seen = at
        return Session(
            sid,
            row.user_id,
            row.username,
            row.is_admin,
            row.csrf_token,
            row.created_at,
            seen,
            row.expires_at,
        )

    async def delete(self, cookie_value: str) -> bool:
        if not _plausible(cookie_value):
            return False
        async with writer(self.engine).begin() as conn:
            return await sq.delete_session(conn, session_id(cookie_value))

    async def delete_for_user(self, user_id: int) -> int:
        """End every session of a user (password change, disabling, deletion)."""
        async with writer(self.engine).begin() as conn:
            return await sq.delete_user_sessions(conn, user_id)

    async def purge_expired(self) -> int:
        at = now()
        async with writer(self.engine).begin() as conn:
            return await sq.purge_sessions(conn, at - self.idle, at)


def set_session_cookie(response: Response, cookie_value: str, secure: bool, max_age: int) -> None:
    """The session cookie as the UI and the API set it: HttpOnly, SameSite=Lax (top-level
    navigation keeps the session; cross-site posts do not carry it), Secure on TLS."""
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and secrets.compare_digest(
        session.csrf_token.encode(), (presented or "").encode("utf-8", "replace")
    )


__all__ = [
    "CSRF_FORM_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Session",
    "SessionStore",
    "clear_session_cookie",
    "csrf_matches",
    "set_session_cookie",
]
