"""moorage/aio.py: stopping a background task whose cancellation gets lost."""

from __future__ import annotations

import asyncio

import pytest

from moorage.aio import cancel_and_wait, cancelling


async def _loop_that_loses_the_first_cancel(log: list[str]) -> None:
    """A background loop whose first cancellation gets lost on its way out."""
    lost = False
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True
            log.append("lost one")


async def test_cancel_and_wait_cancels_again_until_the_task_ends() -> None:
    # The old way, one cancel() and then await the task, waits forever for this loop.
    log: list[str] = []
    task = asyncio.create_task(_loop_that_loses_the_first_cancel(log))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and log == ["lost one"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    log.clear()
    task = asyncio.create_task(_loop_that_loses_the_first_cancel(log))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), 5)
    assert task.cancelled() and log == ["lost one"]


async def test_cancel_and_wait_raises_the_tasks_own_error() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ValueError("broken on the way out") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken on the way out"):
        await cancel_and_wait(task)
    # A task already finished: nothing to cancel, nothing raised.
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)


async def test_cancelling_tells_an_except_clause_that_the_task_is_being_stopped() -> None:
    seen: list[bool] = []

    async def work() -> None:
        seen.append(cancelling())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            try:
                raise RuntimeError("cleanup failed") from None
            except RuntimeError:
                seen.append(cancelling())
                raise asyncio.CancelledError from None

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert seen == [False, True]


async def test_several_tasks_are_cancelled_together() -> None:
    """Loops that each lose their first cancellation are cancelled in the same rounds, not one
    after the other (a job runner's stop cancels all its jobs still running)."""
    log: list[str] = []

    async def loop(name: str) -> None:
        try:
            await _loop_that_loses_the_first_cancel(log)
        finally:
            log.append(f"{name} ended")

    tasks = [asyncio.create_task(loop(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(*tasks, every=0.05), 5)
    assert all(t.cancelled() for t in tasks)
    # Both lost their first cancellation before either ended: one after the other would read
    # "lost one", "a ended", "lost one", "b ended".
    assert log[:2] == ["lost one", "lost one"]
    assert sorted(log[2:]) == ["a ended", "b ended"]
