"""The webhook API's read and write models (also rendered by the UI and the CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ..services.models import Model

EventKindName = Literal["push", "pull", "delete", "scan", "policy", "replication"]
FormatName = Literal["distribution", "cloudevents"]


class Webhook(Model):
    id: int
    scope: Literal["namespace", "repository"] = Field(
        description="namespace: every repository of an organization (or a user's namespace)."
    )
    target: str = Field(description="The organization (namespace) or the repository.")
    url: str
    events: list[str]
    format: FormatName
    description: str
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook):
    secret: str | None = Field(
        description="The signing secret when the server generated it (shown once); null when "
        "the caller supplied it."
    )


class DeliveryAttempt(Model):
    number: int
    started_at: datetime
    duration_ms: float
    status: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    error: str | None
    node: str


class Delivery(Model):
    id: int
    uid: str = Field(description="Sent as X-Moorage-Delivery.")
    webhook_id: int
    kind: str = Field(description="push, pull, delete, scan, policy, replication or test.")
    event_count: int
    repository: str | None
    state: Literal["queued", "retrying", "succeeded", "failed"]
    attempts: int
    max_attempts: int
    last_status: int | None
    last_error: str | None
    job_id: int | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[DeliveryAttempt]


class DeliveryDetail(Delivery):
    content_type: str
    body: str = Field(description="The payload exactly as sent (the signature covers it).")
