"""Services over a real database and store, wired as the server wires them, for tests that
drive the service layer without a server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from moorage.config import load_config
from moorage.db.engine import create_engine, upgrade, writer
from moorage.db.hotpath import hot_reads_for
from moorage.db.writers import write_path_for
from moorage.services.context import ServiceContext
from moorage.storage.filesystem import FilesystemDriver


@contextlib.asynccontextmanager
async def service_context(url: str, store: Path) -> AsyncIterator[ServiceContext]:
    """A migrated database at *url* and a filesystem store at *store*, with the hot reads and
    the raw write path of a server; everything closed afterwards."""
    await upgrade(url)
    engine = create_engine(url, 2)
    hot = hot_reads_for(url, 1)
    writes = write_path_for(url, hot)
    storage = FilesystemDriver(str(store))
    try:
        yield ServiceContext(
            load_config(None, environ={}), engine, writer(engine), storage, hot, writes
        )
    finally:
        await writes.close()
        await hot.close()
        await engine.dispose()
        await storage.close()
