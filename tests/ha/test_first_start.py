"""First-start setup run by several nodes at the same moment, without the processes: eight
concurrent bootstraps and eight concurrent ensure_key calls on one fresh PostgreSQL database
create exactly one administrator and one signing key (they take turns under an advisory lock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from moorage.auth.bootstrap import bootstrap
from moorage.auth.tokens import TokenService
from moorage.config import load_config
from moorage.db.engine import create_engine, upgrade, writer

from ..conftest import postgres_database

pytestmark = pytest.mark.ha


async def test_concurrent_first_start_makes_one_admin_and_one_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOORAGE_ADMIN_PASSWORD", "first-start-password-1")
    with postgres_database() as url:
        await upgrade(url)
        config = load_config(overrides={"database.url": url, "data_dir": str(tmp_path)})
        await asyncio.gather(*(bootstrap(config) for _ in range(8)))

        engines = [create_engine(url, 2) for _ in range(8)]
        try:
            tokens = [
                TokenService(
                    writer(e),
                    issuer="moorage",
                    service="moorage",
                    lifetime=300,
                    refresh_lifetime=600,
                    key_overlap=60,
                )
                for e in engines
            ]
            await asyncio.gather(*(t.ensure_key() for t in tokens))
            async with engines[0].connect() as conn:
                users = (await conn.execute(sa.text("SELECT username FROM users"))).all()
                keys = (
                    await conn.execute(
                        sa.text("SELECT count(*) FROM signing_keys WHERE superseded_at IS NULL")
                    )
                ).scalar()
        finally:
            for e in engines:
                await e.dispose()
    assert [u[0] for u in users] == ["admin"]
    assert keys == 1
