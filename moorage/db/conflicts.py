"""Retrying a write transaction that PostgreSQL aborted to break a conflict.

PostgreSQL resolves a deadlock (SQLSTATE 40P01) or a serialization failure (40001) by aborting
one of the transactions involved; its manual's advice is to run that transaction again. Twenty
clients pushing the same image through three nodes at once are exactly such a case: the
victim's request must not become a 503 for a conflict that a second try clears.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("moorage.db")

T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
ATTEMPTS = 8


def is_conflict(exc: BaseException) -> bool:
    """Whether *exc* is PostgreSQL aborting this transaction to break a conflict."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in RETRYABLE_SQLSTATES


async def retry_conflicts(
    transaction: Callable[[], Awaitable[T]], what: str, attempts: int = ATTEMPTS
) -> T:
    """Run *transaction* (a whole transaction: begun and ended inside it) again when PostgreSQL
    aborts it to break a deadlock or a serialization conflict, after a short random pause that
    lets the other side finish; any other error, or the last attempt's, goes to the caller."""
    for attempt in range(1, attempts + 1):
        try:
            return await transaction()
        except DBAPIError as exc:
            if attempt == attempts or not is_conflict(exc):
                raise
            # A repeated conflict is worth an operator's notice (and a failing test's report).
            level = logging.INFO if attempt == 1 else logging.WARNING
            log.log(level, "%s: %s, attempt %d of %d", what, exc.orig, attempt, attempts)
            # Exponential, jittered: twenty clients pushing one image through three nodes
            # collided again after pauses of 5-50 ms and used up four attempts (CI, run 14).
            await asyncio.sleep(random.uniform(0.01, 0.05) * 2 ** min(attempt, 5))
    raise AssertionError("unreachable")
