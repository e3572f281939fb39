"""The row locks of an upload's commit (moorage/db/writepath.py ``commit_blob``) on a real
PostgreSQL: an existing blob row is key-share locked, so a manifest push's share locks on the
same rows never wait for it (concurrent pushes of one image deadlocked when it was an
exclusive lock), and a garbage collector's ``FOR UPDATE`` still holds the commit back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from moorage.db.engine import upgrade
from moorage.db.writepath import commit_blob
from moorage.db.writers import _PgTx
from tests.conftest import BACKENDS, postgres_database

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="PostgreSQL not selected")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def two_connections(url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two sessions on a migrated database (opened in the test's own event loop)."""
    await upgrade(url)
    a, b = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def _commit(conn: asyncpg.Connection, digests: list[str], repo: str) -> None:
    """One transaction committing several uploads, as a batch of the write path does."""
    async with conn.transaction():
        for d in digests:
            await commit_blob(_PgTx(conn), d, 10, repo, repo.split("/")[0], None, None)


async def _blob_id(conn: asyncpg.Connection, digest: str) -> int | None:
    return await conn.fetchval("SELECT id FROM blobs WHERE digest = $1", digest)


async def test_a_manifest_push_share_lock_does_not_hold_up_a_commit_of_the_same_blobs(
    pg_url: str,
) -> None:
    async with two_connections(pg_url) as (pusher, uploader):
        await _share_lock_case(pusher, uploader)


async def _share_lock_case(pusher: asyncpg.Connection, uploader: asyncpg.Connection) -> None:
    a, b = sorted((_digest("layer a"), _digest("layer b")))
    await _commit(uploader, [a, b], "team/app")
    # A manifest PUT holds share locks on the blobs it names (ReferenceLocks), in digest order;
    # meanwhile a batch commits the same blobs again in the other order (other clients'
    # uploads of the same layers). With an exclusive lock on existing rows the batch waited
    # here, and crossing orders deadlocked.
    async with pusher.transaction():
        await pusher.fetch(
            "SELECT id FROM blobs WHERE digest = ANY($1::text[]) ORDER BY digest FOR SHARE",
            [a, b],
        )
        await asyncio.wait_for(_commit(uploader, [b, a], "team/other"), timeout=10)
    links = await uploader.fetchval(
        "SELECT count(*) FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id"
        " WHERE r.name = 'team/other'"
    )
    assert links == 2


@pytest.mark.parametrize("deletes", [True, False], ids=["collector-deletes", "collector-keeps"])
async def test_a_collector_holding_the_row_makes_the_commit_wait(
    pg_url: str, deletes: bool
) -> None:
    """The collector locks the row FOR UPDATE, then deletes it (no references found) or keeps
    it (its re-check found one): the upload's commit waits either way, then inserts a new row
    or links the old one — never a link to a deleted row."""
    async with two_connections(pg_url) as (collector, uploader):
        await _collector_case(collector, uploader, deletes)


async def _collector_case(
    collector: asyncpg.Connection, uploader: asyncpg.Connection, deletes: bool
) -> None:
    d = _digest(f"layer the collector {'deletes' if deletes else 'keeps'}")
    await _commit(uploader, [d], f"team/gc-{deletes}")
    old = await _blob_id(uploader, d)
    tx = collector.transaction()
    await tx.start()
    try:
        await collector.fetch("SELECT id FROM blobs WHERE digest = $1 FOR UPDATE", d)
        commit = asyncio.create_task(_commit(uploader, [d], f"team/gc2-{deletes}"))
        await asyncio.sleep(0.5)
        assert not commit.done()  # the collector's lock holds the upload's commit back
        if deletes:
            await collector.execute("DELETE FROM repository_blobs WHERE blob_id = $1", old)
            await collector.execute("DELETE FROM blobs WHERE id = $1", old)
    finally:
        await (tx.commit() if deletes else tx.rollback())
    await asyncio.wait_for(commit, timeout=10)
    now = await _blob_id(uploader, d)
    assert now is not None and (now != old if deletes else now == old)
    linked = await uploader.fetchval(
        "SELECT count(*) FROM repository_blobs WHERE blob_id = $1", now
    )
    assert linked == (1 if deletes else 2)
