"""What every service needs: the database engines, the blob store and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Config
from ..db.hotpath import HotReads
from ..storage.base import StorageDriver


@dataclass(slots=True)
class ServiceContext:
    config: Config
    engine: AsyncEngine  # reads
    write_engine: AsyncEngine  # same pool; SQLite takes the write lock at BEGIN
    storage: StorageDriver
    hot: HotReads  # raw-driver lookups for manifest GET/HEAD and blob HEAD
