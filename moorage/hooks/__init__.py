"""Webhooks: event payloads (CNCF Distribution envelope, CloudEvents), their HMAC signature,
and :func:`publish`. Scans, policy refusals and replication runs are announced without their
capabilities importing this package: the wiring subscribes to ``ScanCompleted`` on the event
bus, to the refusals' audit records and to replication's "finished" hook (outbox.py). A new
kind of announcement may call :func:`publish` itself::

    from moorage import hooks

    event = hooks.scan_completed_event(
        hooks.Target("acme/app", digest, media_type, size), hooks.source(),
        status="done", summary={"critical": 1}, scanned_at=now,
    )
    await hooks.publish(conn, event)  # on the connection of the transaction that records it

The capability itself (tables, outbox, delivery jobs, API, UI, CLI) is wired in wiring.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .payloads import (
    CLOUDEVENTS_MEDIA_TYPE,
    DISTRIBUTION_MEDIA_TYPE,
    EVENT_KINDS,
    FORMATS,
    Event,
    PayloadError,
    Reference,
    RequestInfo,
    Source,
    Target,
    delete_event,
    policy_violation_event,
    pull_event,
    push_event,
    render,
    replication_finished_event,
    scan_completed_event,
)
from .signing import HEADER, SignatureError, sign, verify

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def publish(conn: AsyncConnection, event: Event, *, repository: str | None = None) -> int:
    """Queue *event* for the webhooks of its repository and that repository's namespace that
    subscribed to its kind; delivered after the caller's transaction commits (and not at all if
    it rolls back). *repository* names where to look for an event without a target. Returns
    the number of deliveries queued (0 when nobody subscribed)."""
    from .outbox import publish as _publish

    return await _publish(conn, event, repository=repository)


def source() -> Source:
    """This node, as events name their source."""
    from .outbox import source as _source

    return _source()


__all__ = [
    "CLOUDEVENTS_MEDIA_TYPE",
    "DISTRIBUTION_MEDIA_TYPE",
    "EVENT_KINDS",
    "FORMATS",
    "HEADER",
    "Event",
    "PayloadError",
    "Reference",
    "RequestInfo",
    "SignatureError",
    "Source",
    "Target",
    "delete_event",
    "policy_violation_event",
    "pull_event",
    "publish",
    "push_event",
    "render",
    "replication_finished_event",
    "scan_completed_event",
    "sign",
    "source",
    "verify",
]
