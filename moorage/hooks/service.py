"""Managing webhooks (REST API, UI) and the functions the command line shares with it.

Who may: a system administrator, anyone; an organization's admins, its webhooks (namespace
webhooks and those of its repositories); a user, their own namespace's; holders of the admin
role on a repository, that repository's. Robots and bearer tokens may not (a webhook sends a
repository's events elsewhere: a people's decision). A webhook the caller may not manage is
"not found", as if it did not exist.

Secrets are stored sealed with ``auth.token.key_encryption_secret`` (moorage/auth/keycrypt.py,
the signing keys' scheme) and shown once, when the server generated them.
"""

from __future__ import annotations

import secrets as _secrets
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth.keycrypt import seal_text
from ..auth.scopes import ADMIN
from ..config import Config
from ..oci.names import valid_name
from ..services.catalog import check_limit, decode_cursor, page_of
from ..services.errors import Conflict, Denied, Invalid, Missing
from ..services.management import AdminService, Caller
from ..services.models import Page
from . import outbox
from . import queries as q
from .delivery import AddressPolicy, check_url, secret_context
from .models import Delivery, DeliveryAttempt, DeliveryDetail, Webhook, WebhookWithSecret
from .payloads import EVENT_KINDS, FORMATS, test_event

MIN_SECRET, MAX_SECRET = 16, 256


def parse_target(text: str) -> tuple[str, str]:
    """``ORG`` (a namespace) or ``ORG/REPO`` (a repository) → (scope, target)."""
    text = (text or "").strip()
    if not text or len(text) > 255 or not valid_name(text):
        raise Invalid("target", f"{text[:100]!r} is not an organization or a repository name")
    return ("repository" if "/" in text else "namespace"), text


def parse_events(value: Iterable[str] | str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    kinds = [k.strip() for k in items if k.strip()]
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if not kinds or unknown:
        raise Invalid(
            "events", f"events are one or more of {', '.join(EVENT_KINDS)} (not {unknown or []})"
        )
    return [k for k in EVENT_KINDS if k in kinds]  # canonical order, no duplicates


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Invalid("format", f"format is {' or '.join(FORMATS)}")
    return fmt


def check_secret(secret: str | None) -> str:
    if secret is None:
        return _secrets.token_urlsafe(32)
    if not (MIN_SECRET <= len(secret) <= MAX_SECRET) or not secret.isprintable():
        raise Invalid("secret", f"secret is {MIN_SECRET} to {MAX_SECRET} printable characters")
    return secret


def checked_url(config: Config, url: str) -> str:
    try:
        return check_url(url, AddressPolicy(config.webhooks))
    except ValueError as exc:
        raise Invalid("url", str(exc)) from None


def _description(value: str | None) -> str:
    value = value or ""
    if len(value) > 255 or "\x00" in value:
        raise Invalid("description", "description is at most 255 characters")
    return value


async def create_in(
    conn: AsyncConnection,
    config: Config,
    *,
    scope: str,
    target: str,
    url: str,
    events: list[str],
    fmt: str,
    secret: str,
    description: str,
    actor: str,
) -> int:
    """Insert a checked webhook (the caller validated and authorized)."""
    if await q.count_for_target(conn, scope, target) >= config.webhooks.max_per_scope:
        raise Conflict(f"{target} has {config.webhooks.max_per_scope} webhooks already")
    uid = str(uuid.uuid4())
    sealed = seal_text(config.auth.token.key_encryption_secret, secret_context(uid), secret)
    return await q.insert_webhook(
        conn,
        uid=uid,
        scope=scope,
        target=target,
        url=url,
        events=",".join(events),
        format=fmt,
        secret=sealed,
        description=description,
        enabled=True,
        created_by=actor[:255],
    )


async def test_in(conn: AsyncConnection, hook: q.WebhookRow, actor: str) -> int:
    """Queue a test delivery (sent whatever the webhook subscribes to)."""
    event = test_event(outbox.source(), hook.target, actor)
    repo = hook.target if hook.scope == "repository" else None
    return (await outbox.enqueue(conn, hook, [event], repo))[0]


async def redeliver_in(conn: AsyncConnection, hook: q.WebhookRow, delivery: q.DeliveryRow) -> int:
    """A new delivery of the same body (same event ids: a receiver deduplicates)."""
    assert delivery.body is not None
    delivery_id = await q.insert_delivery(
        conn,
        uid=str(uuid.uuid4()),
        webhook_id=hook.id,
        kind=delivery.kind,
        event_count=delivery.event_count,
        repository=delivery.repository,
        content_type=delivery.content_type,
        body=delivery.body,
        max_attempts=delivery.max_attempts,
    )
    from ..db import job_queries

    job_id = await job_queries.enqueue(
        conn, "hooks.deliver", {"delivery": delivery_id}, max_attempts=delivery.max_attempts
    )
    await q.set_job(conn, delivery_id, job_id)
    return delivery_id


def webhook_model(h: q.WebhookRow) -> Webhook:
    return Webhook(
        id=h.id,
        scope=h.scope,
        target=h.target,
        url=h.url,
        events=list(h.events),
        format=h.format,
        description=h.description,
        enabled=h.enabled,
        created_by=h.created_by,
        created_at=h.created_at,
        updated_at=h.updated_at,
    )


def delivery_model(d: q.DeliveryRow, attempts: list[q.AttemptRow]) -> Delivery:
    return Delivery(
        id=d.id,
        uid=d.uid,
        webhook_id=d.webhook_id,
        kind=d.kind,
        event_count=d.event_count,
        repository=d.repository,
        state=d.state,
        attempts=d.attempts,
        max_attempts=d.max_attempts,
        last_status=d.last_status,
        last_error=d.last_error,
        job_id=d.job_id,
        created_at=d.created_at,
        finished_at=d.finished_at,
        attempt_log=[
            DeliveryAttempt(
                number=a.number,
                started_at=a.started_at,
                duration_ms=a.duration_ms,
                status=a.status,
                error=a.error,
                node=a.node,
            )
            for a in attempts
        ],
    )


def _id(raw: Any, what: str = "webhook") -> int:
    text = str(raw)
    if not (text.isascii() and text.isdecimal()) or len(text) > 18:
        raise Missing(f"no {what} {text[:30]}")
    return int(text)


class WebhookService(AdminService):
    @property
    def config(self) -> Config:
        return self.ctx.config

    # --- authorization ------------------------------------------------------------------------

    def _sysadmin_caller(self, c: Caller) -> bool:
        p = c.principal
        return p.kind == "user" and p.is_admin and p.token_scopes is None

    async def may_manage(self, c: Caller, scope: str, target: str, write: bool) -> bool:
        p = c.principal
        if not p.may_use_api(write=write):
            return False
        if self._sysadmin_caller(c):
            return True
        if p.kind != "user" or p.token_scopes is not None:
            return False
        if scope == "repository":
            return ADMIN in await self.access.allowed_actions(p, target)
        if target == p.name:
            return True
        return ADMIN in await self.access.organization_actions(p, target)

    async def _require(self, c: Caller, scope: str, target: str, write: bool) -> None:
        if not await self.may_manage(c, scope, target, write):
            raise Denied(
                f"managing webhooks of {target} needs the admin role on it"
                if c.principal.kind == "user"
                else "webhooks are managed by people, not robots or tokens"
            )

    async def _hook(self, c: Caller, webhook_id: Any, write: bool) -> q.WebhookRow:
        wid = _id(webhook_id)
        async with self.ctx.engine.connect() as conn:
            hook = await q.get_webhook(conn, wid)
        if hook is None or not await self.may_manage(c, hook.scope, hook.target, write):
            raise Missing(f"no webhook {wid}")
        return hook

    # --- webhooks --------------------------------------------------------------------------------

    async def create(
        self,
        c: Caller,
        target: str,
        url: str,
        events: Iterable[str] | str,
        fmt: str = "distribution",
        secret: str | None = None,
        description: str | None = None,
    ) -> WebhookWithSecret:
        scope, name = parse_target(target)
        await self._require(c, scope, name, write=True)
        kinds = parse_events(events)
        check_format(fmt)
        url = checked_url(self.config, url)
        generated = secret is None
        secret = check_secret(secret)
        async with self._tx() as conn:
            wid = await create_in(
                conn,
                self.config,
                scope=scope,
                target=name,
                url=url,
                events=kinds,
                fmt=fmt,
                secret=secret,
                description=_description(description),
                actor=c.principal.name,
            )
            hook = await q.get_webhook(conn, wid)
        assert hook is not None
        await self._audit(
            c,
            "webhook.create",
            repository=name if scope == "repository" else None,
            details={"id": wid, "target": name, "url": url, "events": kinds, "format": fmt},
        )
        return WebhookWithSecret(
            **webhook_model(hook).model_dump(), secret=secret if generated else None
        )

    async def list_webhooks(
        self,
        c: Caller,
        target: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Webhook]:
        n = check_limit(limit)
        after = decode_cursor(cursor)
        if after is not None and not (after.isascii() and after.isdecimal() and len(after) <= 18):
            raise Invalid("cursor", "cursor is not one this server issued")
        targets = None
        if target:
            scope, name = parse_target(target)
            await self._require(c, scope, name, write=False)
            targets = [(scope, name)]
        elif not self._sysadmin_caller(c) and not c.principal.may_use_api(write=False):
            raise Denied("this token lacks the api:read scope")
        async with self.ctx.engine.connect() as conn:
            rows = await q.list_webhooks(
                conn, targets=targets, after_id=int(after) if after else None, limit=1000
            )
        if targets is None and not self._sysadmin_caller(c):
            allowed: dict[tuple[str, str], bool] = {}
            for h in rows:
                key = (h.scope, h.target)
                if key not in allowed:
                    allowed[key] = await self.may_manage(c, h.scope, h.target, write=False)
            rows = [h for h in rows if allowed[(h.scope, h.target)]]
        items, nxt = page_of(rows[: n + 1], [str(h.id) for h in rows[: n + 1]], n)
        return Page[Webhook](items=[webhook_model(h) for h in items], next_cursor=nxt)

    async def get(self, c: Caller, webhook_id: Any) -> Webhook:
        return webhook_model(await self._hook(c, webhook_id, write=False))

    async def update(
        self,
        c: Caller,
        webhook_id: Any,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        fmt: str | None = None,
        enabled: bool | None = None,
        description: str | None = None,
        secret: str | None = None,
    ) -> Webhook:
        hook = await self._hook(c, webhook_id, write=True)
        values: dict[str, Any] = {}
        if url is not None:
            values["url"] = checked_url(self.config, url)
        if events is not None:
            values["events"] = ",".join(parse_events(events))
        if fmt is not None:
            values["format"] = check_format(fmt)
        if enabled is not None:
            values["enabled"] = bool(enabled)
        if description is not None:
            values["description"] = _description(description)
        if secret is not None:
            values["secret"] = seal_text(
                self.config.auth.token.key_encryption_secret,
                secret_context(hook.uid),
                check_secret(secret),
            )
        async with self._tx() as conn:
            if values:
                await q.update_webhook(conn, hook.id, **values)
            updated = await q.get_webhook(conn, hook.id)
        if updated is None:
            raise Missing(f"no webhook {hook.id}")
        shown = {k: v for k, v in values.items() if k != "secret"}
        if "secret" in values:
            shown["secret"] = "changed"
        await self._audit(
            c,
            "webhook.update",
            repository=hook.target if hook.scope == "repository" else None,
            details={"id": hook.id, **shown},
        )
        return webhook_model(updated)

    async def delete(self, c: Caller, webhook_id: Any) -> None:
        hook = await self._hook(c, webhook_id, write=True)
        async with self._tx() as conn:
            await q.delete_webhook(conn, hook.id)
        await self._audit(
            c,
            "webhook.delete",
            repository=hook.target if hook.scope == "repository" else None,
            details={"id": hook.id, "target": hook.target, "url": hook.url},
        )

    # --- deliveries ----------------------------------------------------------------------------

    async def test(self, c: Caller, webhook_id: Any) -> Delivery:
        hook = await self._hook(c, webhook_id, write=True)
        async with self._tx() as conn:
            did = await test_in(conn, hook, c.principal.name)
        return await self._delivery(hook, did)

    async def redeliver(self, c: Caller, webhook_id: Any, delivery_id: Any) -> Delivery:
        hook = await self._hook(c, webhook_id, write=True)
        did = _id(delivery_id, "delivery")
        async with self._tx() as conn:
            old = await q.get_delivery(conn, did)
            if old is None or old.webhook_id != hook.id:
                raise Missing(f"no delivery {did} of webhook {hook.id}")
            new = await redeliver_in(conn, hook, old)
        return await self._delivery(hook, new)

    async def _delivery(self, hook: q.WebhookRow, delivery_id: int) -> Delivery:
        async with self.ctx.engine.connect() as conn:
            row = await q.get_delivery(conn, delivery_id, with_body=False)
            attempts = await q.attempts_of(conn, [delivery_id])
        if row is None:
            raise Missing(f"no delivery {delivery_id}")
        return delivery_model(row, attempts[delivery_id])

    async def deliveries(
        self, c: Caller, webhook_id: Any, cursor: str | None = None, limit: int | None = None
    ) -> Page[Delivery]:
        hook = await self._hook(c, webhook_id, write=False)
        n = check_limit(limit)
        before = decode_cursor(cursor)
        if before is not None and not (before.isascii() and before.isdecimal() and len(before) <= 18):
            raise Invalid("cursor", "cursor is not one this server issued")
        async with self.ctx.engine.connect() as conn:
            rows = await q.list_deliveries(conn, hook.id, int(before) if before else None, n + 1)
            attempts = await q.attempts_of(conn, [r.id for r in rows[:n]])
        items, nxt = page_of(rows, [str(r.id) for r in rows], n)
        return Page[Delivery](
            items=[delivery_model(d, attempts[d.id]) for d in items], next_cursor=nxt
        )

    async def delivery(self, c: Caller, webhook_id: Any, delivery_id: Any) -> DeliveryDetail:
        hook = await self._hook(c, webhook_id, write=False)
        did = _id(delivery_id, "delivery")
        async with self.ctx.engine.connect() as conn:
            row = await q.get_delivery(conn, did)
            attempts = await q.attempts_of(conn, [did])
        if row is None or row.webhook_id != hook.id:
            raise Missing(f"no delivery {did} of webhook {hook.id}")
        assert row.body is not None
        return DeliveryDetail(
            **delivery_model(row, attempts[did]).model_dump(),
            content_type=row.content_type,
            body=row.body,
        )
