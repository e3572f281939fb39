"""The SQLite writers' queue (moorage/db/engine.py ``_WriterQueue``) and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from moorage.db.engine import _WriterQueue


async def test_a_cancel_accepted_while_the_turn_is_granted_is_not_swallowed() -> None:
    """The turn is handed to a waiter and, before the waiter runs, the waiter is cancelled
    (a job stopping its progress reporter). With ``asyncio.wait_for`` (Python 3.11) the waiter
    returned the turn and the cancel was lost: the reporter wrote on forever and its job never
    ended. A cancel that was accepted must raise, and leave the turn free."""
    queue = _WriterQueue()
    held = await queue.acquire()
    waiter = asyncio.ensure_future(queue.acquire())
    await asyncio.sleep(0)  # the waiter queues for the turn
    held.release()  # the turn goes to the waiter...
    await asyncio.sleep(0)  # ...whose acquisition may complete before the waiter itself runs
    if waiter.cancel():
        with pytest.raises(asyncio.CancelledError):
            await waiter
    else:  # it had already finished: it holds the turn and gives it back
        (await waiter).release()
    lock = await asyncio.wait_for(queue.acquire(), 5)  # the turn is free
    lock.release()


async def test_a_waiter_cancelled_in_the_queue_leaves_it_moving() -> None:
    queue = _WriterQueue()
    held = await queue.acquire()
    waiters = [asyncio.ensure_future(queue.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[1].cancel()
    held.release()
    first = await waiters[0]
    first.release()
    last = await waiters[2]
    last.release()
    assert waiters[1].cancelled()
