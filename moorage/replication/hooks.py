""""Replication finished": what other capabilities (webhooks) subscribe to.

When the last task of an execution is recorded, the node that recorded it publishes
:class:`ExecutionFinished` *inside that transaction* (as the core's domain events are): a
subscriber's writes — a webhook outbox row — commit with the execution's final state or not at
all, on exactly one node. Subscribers must stay quick and local to the database; deliver from a
job. Executions that fail while planning (the source could not be listed) are published too.

The hooks capability subscribes in its setup, after replication's (capabilities.py order)::

    rt.services["replication"].finished.on(my_subscriber)  # async (conn, ExecutionFinished)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class ExecutionFinished:
    execution: int
    policy: str
    trigger: str
    state: str  # succeeded | partial | failed
    total: int
    succeeded: int
    failed: int
    bytes: int
    message: str | None = None
    remote: str = ""
    direction: str = "push"  # push | pull
    # The local repositories the execution read (push) or wrote (pull), at most
    # ``REPOSITORIES_MAX``: where webhooks subscribed to "replication" are looked up. An
    # execution that failed while planning has none; ``pattern`` (the policy's source pattern,
    # or the destination namespace of a pull) then names the namespace, when it is literal.
    repositories: tuple[str, ...] = ()
    pattern: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


REPOSITORIES_MAX = 1000

Subscriber = Callable[[AsyncConnection, ExecutionFinished], Awaitable[None]]


class Finished:
    """Subscribers of :class:`ExecutionFinished`, called in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def on(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def wanted(self) -> bool:
        """Whether anyone subscribed (the publisher skips reading what nobody needs)."""
        return bool(self._subscribers)

    async def publish(self, conn: AsyncConnection, event: ExecutionFinished) -> None:
        for subscriber in self._subscribers:
            await subscriber(conn, event)
