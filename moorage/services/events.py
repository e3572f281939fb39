"""Domain events: what changed in a repository, published inside the transaction that changed it.

The services publish an event on the same connection, before the commit, so a subscriber's own
writes (a job to scan the new manifest, a webhook outbox row, a garbage-collection review row)
commit or roll back with the change itself: no event is lost when a node dies after the commit,
and none is invented for a change that rolled back (the outbox pattern). Subscribers must
therefore be quick and local to the database — enqueue work, never call the network; the job
queue runs the slow part on whichever node claims it.

Capabilities subscribe in their wiring module (moorage/capabilities.py lists them)::

    rt.ctx.events.on(ManifestPushed, scan_on_push)

Pulls are not events here: they are the hot path, recorded off the request path by the audit
log (moorage/audit), which is where pull-driven work reads them from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class ManifestPushed:
    """A manifest was stored (``tags`` empty for a push by digest). ``replaced`` maps each tag
    that moved to the digest it pointed to before."""

    repository: str
    digest: str
    media_type: str
    artifact_type: str | None
    subject: str | None
    tags: tuple[str, ...]
    replaced: tuple[tuple[str, str], ...] = ()
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class TagDeleted:
    repository: str
    tag: str
    digest: str  # what the tag pointed to
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestDeleted:
    """A manifest and the tags that pointed to it are gone from a repository."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryDeleted:
    repository: str
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class BlobCommitted:
    """An upload finished (or a blob was mounted) and the blob is linked into *repository*."""

    repository: str
    digest: str
    size: int
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ScanCompleted:
    """A manifest's scan reached its final state (``done``, ``failed`` or ``unsupported``),
    published in the transaction that records the result. ``summary`` counts findings by
    severity; ``database_updated_at`` is the vulnerability database's age, when one matched."""

    repository: str
    digest: str
    status: str
    summary: tuple[tuple[str, int], ...] = ()
    scanned_at: datetime | None = None
    database_updated_at: datetime | None = None


Event = (
    ManifestPushed | TagDeleted | ManifestDeleted | RepositoryDeleted | BlobCommitted | ScanCompleted
)
E = TypeVar(
    "E",
    ManifestPushed,
    TagDeleted,
    ManifestDeleted,
    RepositoryDeleted,
    BlobCommitted,
    ScanCompleted,
)
Subscriber = Callable[[AsyncConnection, Any], Awaitable[None]]


class EventBus:
    """Subscribers per event type, called in subscription order inside the publisher's
    transaction. A subscriber that raises aborts the change: subscribe only what must be
    atomic with it."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[type, list[Subscriber]] = defaultdict(list)

    def on(self, kind: type[E], subscriber: Callable[[AsyncConnection, E], Awaitable[None]]) -> None:
        self._subscribers[kind].append(subscriber)

    def wants(self, kind: type) -> bool:
        """Whether anyone listens (publishers skip building events nobody reads)."""
        return bool(self._subscribers.get(kind))

    async def publish(self, conn: AsyncConnection, event: Event) -> None:
        for subscriber in self._subscribers.get(type(event), ()):
            await subscriber(conn, event)
