"""/api/v1/webhooks: subscriptions, their delivery log, "send test event" and redelivery."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..api.routing import Call, Op
from ..api.schemas import PageQuery
from ..services.models import Model, Page
from .models import Delivery, DeliveryDetail, EventKindName, FormatName, Webhook, WebhookWithSecret
from .service import WebhookService

Secret = Field(
    None,
    min_length=16,
    max_length=256,
    description="Signing secret (HMAC-SHA256 key); omitted: the server generates one and shows "
    "it once.",
)


class WebhookCreate(Model):
    target: str = Field(
        max_length=255,
        description="An organization (every repository in it) or a repository (org/name).",
    )
    url: str = Field(max_length=2048, description="Receiver URL (http or https).")
    events: list[EventKindName] = Field(min_length=1, max_length=6)
    format: FormatName = "distribution"
    secret: str | None = Secret
    description: str | None = Field(None, max_length=255)


class WebhookUpdate(Model):
    url: str | None = Field(None, max_length=2048)
    events: list[EventKindName] | None = Field(None, min_length=1, max_length=6)
    format: FormatName | None = None
    enabled: bool | None = None
    description: str | None = Field(None, max_length=255)
    secret: str | None = Secret


class WebhookQuery(PageQuery):
    target: str | None = Field(
        None, max_length=255, description="Only this organization's or repository's webhooks."
    )


def ops(service: WebhookService) -> list[Op]:
    hook = "/webhooks/{webhook_id}"
    delivery = hook + "/deliveries/{delivery_id}"
    w = (400, 401, 403, 404, 409, 422)

    async def create(c: Call) -> Any:
        b: WebhookCreate = c.body
        return await service.create(
            c.caller, b.target, b.url, b.events, b.format, b.secret, b.description
        )

    async def list_(c: Call) -> Any:
        return await service.list_webhooks(c.caller, c.query.target, c.query.cursor, c.query.limit)

    async def get(c: Call) -> Any:
        return await service.get(c.caller, c.path["webhook_id"])

    async def update(c: Call) -> Any:
        b: WebhookUpdate = c.body
        return await service.update(
            c.caller,
            c.path["webhook_id"],
            url=b.url,
            events=b.events,
            fmt=b.format,
            enabled=b.enabled,
            description=b.description,
            secret=b.secret,
        )

    async def delete(c: Call) -> Any:
        await service.delete(c.caller, c.path["webhook_id"])

    async def test(c: Call) -> Any:
        return await service.test(c.caller, c.path["webhook_id"])

    async def deliveries(c: Call) -> Any:
        q = c.query
        return await service.deliveries(c.caller, c.path["webhook_id"], q.cursor, q.limit)

    async def one_delivery(c: Call) -> Any:
        return await service.delivery(c.caller, c.path["webhook_id"], c.path["delivery_id"])

    async def redeliver(c: Call) -> Any:
        return await service.redeliver(c.caller, c.path["webhook_id"], c.path["delivery_id"])

    return [
        Op("GET", "/webhooks", list_, "Webhooks the caller manages (all for administrators), or one organization's or repository's", "webhooks", "read", query=WebhookQuery, response=Page[Webhook], errors=(400, 401, 403)),
        Op("POST", "/webhooks", create, "Add a webhook to an organization or a repository (its admins); a generated secret is shown once", "webhooks", "write", body=WebhookCreate, response=WebhookWithSecret, status=201, errors=w),
        Op("GET", hook, get, "A webhook", "webhooks", "read", response=Webhook),
        Op("PATCH", hook, update, "Change a webhook's URL, events, format, secret, description, or switch it off", "webhooks", "write", body=WebhookUpdate, response=Webhook, errors=w),
        Op("DELETE", hook, delete, "Delete a webhook and its delivery log", "webhooks", "write", status=204, errors=w),
        Op("POST", hook + "/test", test, "Send a test event (queued: follow it in the delivery log)", "webhooks", "write", response=Delivery, status=202, errors=w),
        Op("GET", hook + "/deliveries", deliveries, "The delivery log, newest first: state, attempts with response codes and timings", "webhooks", "read", query=PageQuery, response=Page[Delivery]),
        Op("GET", delivery, one_delivery, "One delivery with its payload as sent", "webhooks", "read", response=DeliveryDetail),
        Op("POST", delivery + "/redeliver", redeliver, "Send a delivery's payload again (same event ids), as a new delivery", "webhooks", "write", response=Delivery, status=202, errors=w),
    ]  # fmt: skip
