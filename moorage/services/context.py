"""What every service needs: the database engines, the blob store and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Config
from ..db.hotpath import HotReads
from ..db.writers import WritePath
from ..storage.base import StorageDriver
from .events import EventBus
from .pullthrough import PullThrough
from .rules import RuleChain


@dataclass(slots=True)
class ServiceContext:
    config: Config
    engine: AsyncEngine  # reads
    write_engine: AsyncEngine  # same pool; SQLite takes the write lock at BEGIN
    storage: StorageDriver
    hot: HotReads  # raw-driver lookups for manifest GET/HEAD and blob HEAD
    writes: WritePath  # raw-driver, batched writes of the push path (db/writepath.py)
    # What capabilities plug into the services (moorage/capabilities.py): the content rules
    # asked before a manifest is written, read or deleted, and the events published in the
    # transaction of each change.
    rules: RuleChain = field(default_factory=RuleChain)
    events: EventBus = field(default_factory=EventBus)
    # Repositories served from another registry (moorage/mirror's cache organizations); None
    # when no capability sets it (services/pullthrough.py).
    pull_through: PullThrough | None = None
