"""An upload with BlobCommitted subscribers (services/uploads.py) runs the raw path's own
statements (db/writepath.py ``commit_blob``) on SQLAlchemy's async engine, so that the
subscribers get the transaction's connection: garbage collection's side of the commit — the
blob queued for review, a tombstone of the digest ended — happens as on the raw path. (It once
went through a separate copy of the inserts that did neither.)"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from moorage.lifecycle.tables import gc_blob_review, gc_blob_tombstones
from moorage.oci.digest import Digest
from moorage.services.context import ServiceContext
from moorage.services.events import BlobCommitted
from moorage.services.uploads import UploadService
from tests.conftest import BACKENDS, postgres_database

from .services import service_context


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with postgres_database() as url:
        yield url


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_an_upload_with_subscribers_takes_the_raw_paths_statements(
    database_url: str, tmp_path: Path
) -> None:
    async with service_context(database_url, tmp_path / "store") as ctx:
        await _upload_with_a_subscriber(ctx)


async def _upload_with_a_subscriber(ctx: ServiceContext) -> None:
    seen: list[tuple[BlobCommitted, int | None]] = []

    async def subscriber(conn: AsyncConnection, event: BlobCommitted) -> None:
        # Inside the upload's transaction: its blob row is already there.
        row = (
            await conn.execute(
                sa.text("SELECT id FROM blobs WHERE digest = :d"), {"d": event.digest}
            )
        ).first()
        seen.append((event, row[0] if row else None))

    ctx.events.on(BlobCommitted, subscriber)
    data = b"a layer that garbage collection tombstoned before"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with ctx.write_engine.begin() as conn:  # a tombstone whose bytes were never deleted
        await conn.execute(
            sa.insert(gc_blob_tombstones).values(
                digest=digest, size=len(data), deleted_at=datetime.now(UTC)
            )
        )
    await UploadService(ctx).monolithic("team/app", Digest.parse(digest), _one(data))
    assert [(e.repository, e.digest, e.size) for e, _ in seen] == [("team/app", digest, len(data))]
    assert seen[0][1] is not None
    async with ctx.engine.connect() as conn:
        reviews = (
            await conn.execute(
                sa.select(gc_blob_review.c.reason).where(gc_blob_review.c.digest == digest)
            )
        ).all()
        tombstones = (
            await conn.execute(
                sa.select(sa.func.count()).where(gc_blob_tombstones.c.digest == digest)
            )
        ).scalar()
        linked = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FROM repository_blobs rb"
                    " JOIN repositories r ON r.id = rb.repository_id"
                    " JOIN blobs b ON b.id = rb.blob_id"
                    " WHERE r.name = 'team/app' AND b.digest = :d"
                ),
                {"d": digest},
            )
        ).scalar()
    assert [r[0] for r in reviews] == ["upload"]  # queued for GC's review, as on the raw path
    assert tombstones == 0  # the tombstone ended: GC will not delete these bytes
    assert linked == 1
