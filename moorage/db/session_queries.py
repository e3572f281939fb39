"""SQL for web sessions and personal access tokens (tables ``web_sessions``, ``api_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .queries import _aware, now
from .schema import api_tokens, users, web_sessions

# --- web sessions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    user_id: int
    username: str
    is_admin: bool
    disabled: bool
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


async def insert_session(
    conn: AsyncConnection,
    session_id: str,
    user_id: int,
    csrf_token: str,
    expires_at: datetime,
    client_addr: str | None,
    user_agent: str | None,
) -> datetime:
    ts = now()
    await conn.execute(
        sa.insert(web_sessions).values(
            id=session_id,
            user_id=user_id,
            csrf_token=csrf_token,
            created_at=ts,
            last_seen_at=ts,
            expires_at=expires_at,
            client_addr=(client_addr or None) and client_addr[:64],
            user_agent=(user_agent or None) and user_agent[:512],
        )
    )
    return ts


async def session_by_id(conn: AsyncConnection, session_id: str) -> SessionRow | None:
    q = (
        sa.select(
            web_sessions,
            users.c.username,
            users.c.is_admin,
            users.c.disabled,
        )
        .select_from(web_sessions.join(users, users.c.id == web_sessions.c.user_id))
        .where(web_sessions.c.id == session_id)
    )
    r = (await conn.execute(q)).first()
    if r is None:
        return None
    return SessionRow(
        r.id,
        r.user_id,
        r.username,
        bool(r.is_admin),
        bool(r.disabled),
        r.csrf_token,
        _aware(r.created_at) or now(),
        _aware(r.last_seen_at) or now(),
        _aware(r.expires_at) or now(),
    )


async def touch_session(conn: AsyncConnection, session_id: str, at: datetime) -> None:
    await conn.execute(
        sa.update(web_sessions).where(web_sessions.c.id == session_id).values(last_seen_at=at)
    )


async def delete_session(conn: AsyncConnection, session_id: str) -> bool:
    res = await conn.execute(sa.delete(web_sessions).where(web_sessions.c.id == session_id))
    return bool(res.rowcount)


async def delete_user_sessions(conn: AsyncConnection, user_id: int) -> int:
    res = await conn.execute(sa.delete(web_sessions).where(web_sessions.c.user_id == user_id))
    return int(res.rowcount or 0)


async def purge_sessions(conn: AsyncConnection, idle_before: datetime, at: datetime) -> int:
    res = await conn.execute(
        sa.delete(web_sessions).where(
            sa.or_(web_sessions.c.expires_at <= at, web_sessions.c.last_seen_at <= idle_before)
        )
    )
    return int(res.rowcount or 0)


# --- personal access tokens -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    user_id: int
    name: str
    prefix: str
    token_hash: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None

    def usable(self, at: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)


def _token(r: Any) -> TokenRow:
    return TokenRow(
        r.id,
        r.user_id,
        r.name,
        r.prefix,
        r.token_hash,
        [str(s) for s in (r.scopes or [])],
        _aware(r.expires_at),
        _aware(r.revoked_at),
        _aware(r.created_at) or now(),
        _aware(r.last_used_at),
    )


async def insert_token(
    conn: AsyncConnection,
    user_id: int,
    name: str,
    prefix: str,
    token_hash: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> int:
    res = await conn.execute(
        sa.insert(api_tokens)
        .values(
            user_id=user_id,
            name=name,
            prefix=prefix,
            token_hash=token_hash,
            scopes=scopes,
            expires_at=expires_at,
            created_at=now(),
        )
        .returning(api_tokens.c.id)
    )
    return int(res.scalar_one())


async def token_by_prefix(conn: AsyncConnection, prefix: str) -> TokenRow | None:
    r = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.prefix == prefix))).first()
    return _token(r) if r else None


async def token_by_id(conn: AsyncConnection, user_id: int, token_id: int) -> TokenRow | None:
    r = (
        await conn.execute(
            sa.select(api_tokens).where(
                api_tokens.c.id == token_id, api_tokens.c.user_id == user_id
            )
        )
    ).first()
    return _token(r) if r else None


async def token_name_taken(conn: AsyncConnection, user_id: int, name: str) -> bool:
    q = sa.select(api_tokens.c.id).where(api_tokens.c.user_id == user_id, api_tokens.c.name == name)
    return (await conn.execute(q)).first() is not None


async def user_tokens(
    conn: AsyncConnection, user_id: int, after_id: int | None, limit: int
) -> list[TokenRow]:
    q = sa.select(api_tokens).where(api_tokens.c.user_id == user_id)
    if after_id is not None:
        q = q.where(api_tokens.c.id > after_id)
    rows = await conn.execute(q.order_by(api_tokens.c.id).limit(limit))
    return [_token(r) for r in rows]


async def revoke_token(conn: AsyncConnection, user_id: int, token_id: int) -> bool:
    res = await conn.execute(
        sa.update(api_tokens)
        .where(
            api_tokens.c.id == token_id,
            api_tokens.c.user_id == user_id,
            api_tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=now())
    )
    return bool(res.rowcount)


async def delete_token(conn: AsyncConnection, user_id: int, token_id: int) -> bool:
    res = await conn.execute(
        sa.delete(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)
    )
    return bool(res.rowcount)


async def touch_tokens(conn: AsyncConnection, used: dict[int, datetime]) -> None:
    for token_id, at in used.items():
        await conn.execute(
            sa.update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at)
        )
