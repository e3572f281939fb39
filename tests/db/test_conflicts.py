"""Write transactions that PostgreSQL aborts to break a deadlock are run again
(moorage/db/conflicts.py), on a real server: two transactions lock two rows in opposite
orders, PostgreSQL's deadlock detector aborts one, and both still succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from moorage.db.conflicts import is_conflict, retry_conflicts
from moorage.db.engine import create_engine
from tests.conftest import BACKENDS, postgres_database

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="PostgreSQL not selected")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


async def _deadlocking_pair(url: str, retry: bool) -> tuple[list[object], dict[str, int]]:
    engine = create_engine(url)
    runs = {"a": 0, "b": 0}
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE IF EXISTS rows")
            await conn.exec_driver_sql("CREATE TABLE rows (id int PRIMARY KEY, n int)")
            await conn.exec_driver_sql("INSERT INTO rows VALUES (1, 0), (2, 0)")
        both_hold_one = asyncio.Barrier(2)

        def transaction(name: str, first: int, second: int) -> object:
            async def run() -> None:
                runs[name] += 1
                async with engine.begin() as conn:
                    await conn.exec_driver_sql("SET LOCAL deadlock_timeout = '50ms'")
                    await conn.execute(
                        sa.text("UPDATE rows SET n = n + 1 WHERE id = :id"), {"id": first}
                    )
                    if runs[name] == 1:  # the first try of each: both hold a row, then cross
                        await asyncio.wait_for(both_hold_one.wait(), 10)
                    await conn.execute(
                        sa.text("UPDATE rows SET n = n + 1 WHERE id = :id"), {"id": second}
                    )

            return retry_conflicts(run, f"test {name}") if retry else run()

        results = await asyncio.gather(
            transaction("a", 1, 2), transaction("b", 2, 1), return_exceptions=True
        )
        async with engine.connect() as conn:
            counts = dict((await conn.exec_driver_sql("SELECT id, n FROM rows")).all())
        return list(results), {"a": runs["a"], "b": runs["b"], **{str(k): v for k, v in counts.items()}}
    finally:
        await engine.dispose()


async def test_without_retry_one_of_two_crossing_transactions_fails(pg_url: str) -> None:
    """The premise: the pair really deadlocks, and the victim's error is recognised."""
    results, state = await _deadlocking_pair(pg_url, retry=False)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], DBAPIError) and is_conflict(errors[0])
    assert state["1"] == state["2"] == 1  # only the survivor's updates


async def test_a_deadlock_victim_is_run_again_and_both_succeed(pg_url: str) -> None:
    results, state = await _deadlocking_pair(pg_url, retry=True)
    assert results == [None, None]
    assert sorted((state["a"], state["b"])) == [1, 2]  # the victim ran twice
    assert state["1"] == state["2"] == 2  # both transactions' updates, once each


async def test_other_errors_are_not_retried(pg_url: str) -> None:
    engine = create_engine(pg_url)
    runs = 0

    async def bad() -> None:
        nonlocal runs
        runs += 1
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT * FROM no_such_table")

    try:
        with pytest.raises(DBAPIError) as raised:
            await retry_conflicts(bad, "test")
        assert not is_conflict(raised.value)
        assert runs == 1
    finally:
        await engine.dispose()
