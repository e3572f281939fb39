"""SQL of the webhooks capability: subscriptions, deliveries (the outbox) and attempts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.confcache import ConfigCache
from ..db.schema import manifests, repositories
from .tables import webhook_attempts, webhook_deliveries, webhooks


def now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite hands back naive UTC
        return ts.replace(tzinfo=UTC)
    return ts


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: int
    uid: str
    scope: str
    target: str
    url: str
    events: tuple[str, ...]
    format: str
    secret: str  # as stored (sealed)
    description: str
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime

    def wants(self, kind: str) -> bool:
        return self.enabled and kind in self.events


def _hook(r: Any) -> WebhookRow:
    return WebhookRow(
        id=int(r.id),
        uid=r.uid,
        scope=r.scope,
        target=r.target,
        url=r.url,
        events=tuple(e for e in str(r.events).split(",") if e),
        format=r.format,
        secret=r.secret,
        description=r.description or "",
        enabled=bool(r.enabled),
        created_by=r.created_by or "",
        created_at=_aware(r.created_at) or now(),
        updated_at=_aware(r.updated_at) or now(),
    )


@dataclass(frozen=True, slots=True)
class AttemptRow:
    number: int
    started_at: datetime
    duration_ms: float
    status: int | None
    error: str | None
    node: str


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    uid: str
    webhook_id: int
    kind: str
    event_count: int
    repository: str | None
    content_type: str
    body: str | None  # None when not read (listings)
    state: str
    attempts: int
    max_attempts: int
    last_status: int | None
    last_error: str | None
    job_id: int | None
    created_at: datetime
    finished_at: datetime | None


_DELIVERY_COLUMNS = [c for c in webhook_deliveries.c if c.name != "body"]


def _delivery(r: Any, with_body: bool) -> DeliveryRow:
    return DeliveryRow(
        id=int(r.id),
        uid=r.uid,
        webhook_id=int(r.webhook_id),
        kind=r.kind,
        event_count=int(r.event_count),
        repository=r.repository,
        content_type=r.content_type,
        body=r.body if with_body else None,
        state=r.state,
        attempts=int(r.attempts),
        max_attempts=int(r.max_attempts),
        last_status=r.last_status,
        last_error=r.last_error,
        job_id=r.job_id,
        created_at=_aware(r.created_at) or now(),
        finished_at=_aware(r.finished_at),
    )


# --- subscriptions ---------------------------------------------------------------------------


async def insert_webhook(conn: AsyncConnection, **values: Any) -> int:
    ts = now()
    result = await conn.execute(
        sa.insert(webhooks).values(created_at=ts, updated_at=ts, **values).returning(webhooks.c.id)
    )
    return int(result.scalar_one())


async def get_webhook(conn: AsyncConnection, webhook_id: int) -> WebhookRow | None:
    row = (await conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id))).first()
    return _hook(row) if row else None


async def list_webhooks(
    conn: AsyncConnection,
    *,
    targets: Iterable[tuple[str, str]] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[WebhookRow]:
    """Subscriptions by id; with *targets* ((scope, target) pairs), only theirs."""
    query = sa.select(webhooks).order_by(webhooks.c.id).limit(limit)
    if targets is not None:
        pairs = list(targets)
        if not pairs:
            return []
        query = query.where(
            sa.or_(*(sa.and_(webhooks.c.scope == s, webhooks.c.target == t) for s, t in pairs))
        )
    if after_id is not None:
        query = query.where(webhooks.c.id > after_id)
    return [_hook(r) for r in await conn.execute(query)]


async def count_for_target(conn: AsyncConnection, scope: str, target: str) -> int:
    return int(
        (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(webhooks)
                .where(webhooks.c.scope == scope, webhooks.c.target == target)
            )
        ).scalar_one()
    )


async def update_webhook(conn: AsyncConnection, webhook_id: int, **values: Any) -> bool:
    result = await conn.execute(
        sa.update(webhooks).where(webhooks.c.id == webhook_id).values(updated_at=now(), **values)
    )
    return bool(result.rowcount)


async def delete_webhook(conn: AsyncConnection, webhook_id: int) -> bool:
    # Attempts and deliveries go with it (ON DELETE CASCADE; explicit for databases that
    # were opened without foreign keys enforced).
    ids = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.webhook_id == webhook_id)
    await conn.execute(sa.delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
    await conn.execute(
        sa.delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
    )
    result = await conn.execute(sa.delete(webhooks).where(webhooks.c.id == webhook_id))
    return bool(result.rowcount)


async def subscribed(
    conn: AsyncConnection, repositories_: Iterable[str], kind: str
) -> dict[str, list[WebhookRow]]:
    """Enabled webhooks that want *kind* for each repository (its own, and its namespace's):
    one indexed query for all of them."""
    repos = sorted(set(repositories_))
    if not repos:
        return {}
    namespaces = sorted({r.split("/", 1)[0] for r in repos})
    rows = await conn.execute(
        sa.select(webhooks).where(
            webhooks.c.enabled.is_(True),
            sa.or_(
                sa.and_(webhooks.c.scope == "repository", webhooks.c.target.in_(repos)),
                sa.and_(webhooks.c.scope == "namespace", webhooks.c.target.in_(namespaces)),
            ),
        )
    )
    hooks = [h for h in (_hook(r) for r in rows) if h.wants(kind)]
    out: dict[str, list[WebhookRow]] = {}
    for repo in repos:
        ns = repo.split("/", 1)[0]
        matching = [
            h
            for h in hooks
            if (h.scope == "repository" and h.target == repo)
            or (h.scope == "namespace" and h.target == ns)
        ]
        if matching:
            out[repo] = matching
    return out


async def _subscribed_to(conn: AsyncConnection, key: tuple[str, str]) -> tuple[WebhookRow, ...]:
    repository, kind = key
    return tuple((await subscribed(conn, [repository], kind)).get(repository, ()))


_subscriptions = ConfigCache("webhooks", _subscribed_to)


async def subscribed_to(conn: AsyncConnection, repository: str, kind: str) -> Sequence[WebhookRow]:
    """:func:`subscribed` for one repository, from this process's cache while the webhooks
    table is unchanged (moorage/db/confcache.py: exact on every node)."""
    return await _subscriptions.get(conn, (repository, kind))


# --- deliveries --------------------------------------------------------------------------------


async def insert_delivery(conn: AsyncConnection, **values: Any) -> int:
    result = await conn.execute(
        sa.insert(webhook_deliveries)
        .values(created_at=now(), **values)
        .returning(webhook_deliveries.c.id)
    )
    return int(result.scalar_one())


async def set_job(conn: AsyncConnection, delivery_id: int, job_id: int | None) -> None:
    await conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(job_id=job_id)
    )


async def get_delivery(
    conn: AsyncConnection, delivery_id: int, with_body: bool = True
) -> DeliveryRow | None:
    cols = list(webhook_deliveries.c) if with_body else _DELIVERY_COLUMNS
    row = (
        await conn.execute(sa.select(*cols).where(webhook_deliveries.c.id == delivery_id))
    ).first()
    return _delivery(row, with_body) if row else None


async def list_deliveries(
    conn: AsyncConnection, webhook_id: int, before_id: int | None = None, limit: int = 50
) -> list[DeliveryRow]:
    """Newest first."""
    query = (
        sa.select(*_DELIVERY_COLUMNS)
        .where(webhook_deliveries.c.webhook_id == webhook_id)
        .order_by(webhook_deliveries.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(webhook_deliveries.c.id < before_id)
    return [_delivery(r, False) for r in await conn.execute(query)]


async def attempts_of(
    conn: AsyncConnection, delivery_ids: Sequence[int]
) -> dict[int, list[AttemptRow]]:
    out: dict[int, list[AttemptRow]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return out
    rows = await conn.execute(
        sa.select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.number)
    )
    for r in rows:
        out[int(r.delivery_id)].append(
            AttemptRow(
                number=int(r.number),
                started_at=_aware(r.started_at) or now(),
                duration_ms=float(r.duration_ms),
                status=r.status,
                error=r.error,
                node=r.node or "",
            )
        )
    return out


async def record_attempt(
    conn: AsyncConnection,
    delivery_id: int,
    *,
    number: int,
    started_at: datetime,
    duration_ms: float,
    status: int | None,
    error: str | None,
    node: str,
    state: str,
) -> None:
    """One attempt's outcome, and the delivery's state after it."""
    await conn.execute(
        sa.insert(webhook_attempts).values(
            delivery_id=delivery_id,
            number=number,
            started_at=started_at,
            duration_ms=duration_ms,
            status=status,
            error=error[:512] if error else None,
            node=node[:255],
        )
    )
    await conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(
            attempts=number,
            state=state,
            last_status=status,
            last_error=error[:512] if error else None,
            finished_at=now() if state in ("succeeded", "failed") else None,
        )
    )


async def finish_delivery(conn: AsyncConnection, delivery_id: int, state: str, error: str) -> None:
    """End a delivery without an attempt (its webhook was disabled)."""
    await conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(state=state, last_error=error[:512], finished_at=now())
    )


async def prune(conn: AsyncConnection, before: datetime, limit: int = 5000) -> int:
    """Delete up to *limit* deliveries created before *before* (and their attempts)."""
    ids = [
        int(r[0])
        for r in await conn.execute(
            sa.select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.created_at < before)
            .order_by(webhook_deliveries.c.id)
            .limit(limit)
        )
    ]
    if not ids:
        return 0
    await conn.execute(sa.delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
    await conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(ids)))
    return len(ids)


# --- what events describe (core tables, read only) -------------------------------------------


async def manifest_facts(
    conn: AsyncConnection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, int, str | None]]:
    """(repository, digest) → (media type, size, artifact type) of stored manifests."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = await conn.execute(
        sa.select(
            repositories.c.name,
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.size,
            manifests.c.artifact_type,
        )
        .join(repositories, repositories.c.id == manifests.c.repository_id)
        .where(
            repositories.c.name.in_(sorted({r for r, _ in wanted})),
            manifests.c.digest.in_(sorted({d for _, d in wanted})),
        )
    )
    return {
        (r.name, r.digest): (r.media_type, int(r.size), r.artifact_type)
        for r in rows
        if (r.name, r.digest) in wanted
    }
