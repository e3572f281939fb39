"""First-start setup: the initial administrator and the token signing key."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from ..config import Config
from ..db import access_queries as aq
from ..db.engine import SETUP_LOCK_KEY, create_engine, serialize, writer
from .passwords import hash_password

log = logging.getLogger("moorage.auth")

INITIAL_PASSWORD_FILE = "initial-admin-password"


async def bootstrap(config: Config) -> None:
    """With no users at all, create ``admin`` (password from MOORAGE_ADMIN_PASSWORD, or a random
    one written once to <data-dir>/initial-admin-password, mode 0600)."""
    engine = create_engine(config.database_url, 2)
    try:
        async with writer(engine).begin() as conn:
            await serialize(conn, SETUP_LOCK_KEY)  # nodes starting together: one creates it
            if await aq.count_users(conn) > 0:
                return
            given = os.environ.get("MOORAGE_ADMIN_PASSWORD")
            password = given or secrets.token_urlsafe(18)
            await aq.create_user(conn, "admin", hash_password(password), is_admin=True)
        if given:
            log.warning(
                "created administrator 'admin' with the password from MOORAGE_ADMIN_PASSWORD"
            )
            return
        path = Path(config.data_dir) / INITIAL_PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        log.warning(
            "created administrator 'admin'; its initial password is in %s (readable by this "
            "user only): log in and change it",
            path,
        )
    finally:
        await engine.dispose()
