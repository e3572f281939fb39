"""The SQLite writers' queue (moorage/db/engine.py ``_WriterQueue``) and cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from moorage.db.engine import _WriterQueue, create_engine, reader, writer


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


async def test_readers_of_the_write_engine_cannot_starve_the_turn_of_a_connection(
    tmp_path: Path,
) -> None:
    """CI, tests/security/test_throttling.py: 32 parallel logins, 12 answered 503 after 30 s.

    The write engine shares the read engine's pool. A ``writer(engine).begin()`` takes its turn
    and then checks a connection out; a ``writer(engine).connect()`` (the login throttle read
    its counters so) checked a connection out and then waited for the turn at BEGIN. Once the
    waiters of the second kind held every pooled connection, the holder of the turn waited for
    one of them and they for the turn — until the pool's 30 s timeout answered 503. The turn
    now always comes before the connection."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=2)  # 4 connections
    write = writer(engine)
    try:
        async with write.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with write.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                holding.set()
                await release.wait()

        async def turn_first() -> None:
            async with write.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (2)"))

        async def connection_first() -> None:
            async with write.connect() as conn:
                await conn.execute(sa.text("SELECT count(*) FROM t"))

        async def plain_read() -> int:
            async with reader(write).connect() as conn:
                return int((await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one())

        async with asyncio.timeout(20):
            first = asyncio.ensure_future(holder())
            await holding.wait()
            queued = asyncio.ensure_future(turn_first())  # next in line for the turn
            await asyncio.sleep(0.05)
            # More would-be readers than pooled connections, queued behind it.
            readers = [asyncio.ensure_future(connection_first()) for _ in range(6)]
            await asyncio.sleep(0.05)
            # A plain read never waits for the turn, whoever holds it.
            assert await plain_read() == 0
            release.set()
            await asyncio.gather(first, queued, *readers)
            assert await plain_read() == 2
    finally:
        await engine.dispose()
