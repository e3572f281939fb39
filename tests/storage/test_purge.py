"""Abandoned upload sessions are purged from the database and the store (both drivers)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from moorage.config import load_config
from moorage.db.engine import create_engine, upgrade, writer
from moorage.db.hotpath import hot_reads_for
from moorage.db.writers import write_path_for
from moorage.services.context import ServiceContext
from moorage.services.errors import UploadUnknown
from moorage.services.uploads import UploadService
from moorage.storage.base import StorageDriver
from moorage.storage.filesystem import FilesystemDriver
from tests.s3server import MotoServer
from tests.storage.s3util import MiB, make_s3


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), MiB):
        yield data[i : i + MiB]


@pytest.mark.parametrize("kind", ["filesystem", "s3"])
async def test_purge_abandoned_sessions(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    await upgrade(url)
    storage: StorageDriver
    if kind == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        storage = make_s3(moto, moto.create_bucket(f"pg-{uuid.uuid4().hex[:12]}"))
    else:
        storage = FilesystemDriver(str(tmp_path / "store"))
    engine = create_engine(url, 2)
    hot = hot_reads_for(url, 1)
    writes = write_path_for(url, hot)
    ctx = ServiceContext(
        load_config(None, environ={}), engine, writer(engine), storage, hot, writes
    )
    uploads = UploadService(ctx)
    try:
        live = await uploads.start("p/r")
        await uploads.append("p/r", live.id, _body(os.urandom(6 * MiB + 1)), None)
        assert await uploads.purge_abandoned(timedelta(hours=1)) == (0, 0)
        assert (await uploads.status("p/r", live.id)).size == 6 * MiB + 1

        sessions, items = await uploads.purge_abandoned(timedelta(0))
        assert sessions == 1 and items >= 1
        with pytest.raises(UploadUnknown):
            await uploads.status("p/r", live.id)
        assert await storage.list("uploads") == []
    finally:
        await writes.close()
        await hot.close()
        await engine.dispose()
        await storage.close()
