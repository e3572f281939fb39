"""Small asyncio helpers shared by the background loops (metrics, jobs, audit, writers)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any], every: float = 1.0) -> None:
    """Cancel *tasks* together and return once all have ended, cancelling those still running
    again every *every* seconds; the first task's own exception (not a cancellation) is raised
    here, once every task has ended.

    One ``task.cancel()`` then ``await task`` waits forever when the cancellation gets lost on
    its way out: SQLAlchemy, cleaning up a connection whose query was cancelled, can raise
    another error in place of the CancelledError ("Can't reconnect until invalid transaction is
    rolled back"), and a loop's ``except Exception`` then carries on. A worker process whose
    metrics task lost its cancellation that way never finished its shutdown."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error


def cancelling() -> bool:
    """Whether the running task has been asked to stop (for an ``except Exception`` that may be
    holding a cancellation turned into another error)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
