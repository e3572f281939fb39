"""First-start setup: the initial administrator and the token signing key."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Config, ConfigError
from ..db import access_queries as aq
from ..db.engine import SETUP_LOCK_KEY, create_engine, serialize, writer
from .keycrypt import KeyDecryptionError
from .passwords import hash_password
from .tokens import TokenService

log = logging.getLogger("moorage.auth")

INITIAL_PASSWORD_FILE = "initial-admin-password"


async def bootstrap(config: Config) -> None:
    """The signing keys (created, or encrypted with a newly set secret; a wrong secret is a
    configuration error), and with no users at all, ``admin`` (password from
    MOORAGE_ADMIN_PASSWORD, or a random one written once to <data-dir>/initial-admin-password,
    mode 0600)."""
    engine = create_engine(config.database_url, 2)
    try:
        await _signing_keys(config, engine)
        await _first_admin(config, engine)
    finally:
        await engine.dispose()


async def _signing_keys(config: Config, engine: AsyncEngine) -> None:
    if not config.auth.token.key_encryption_secret:
        if engine.dialect.name == "postgresql":
            log.warning(
                "token signing keys are stored unencrypted in the shared database: anyone "
                "who reads it can sign tokens. Set auth.token.key_encryption_secret "
                "(MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET), the same on every node"
            )
        else:
            log.info(
                "token signing keys are stored unencrypted (set "
                "auth.token.key_encryption_secret to encrypt them)"
            )
    try:
        await TokenService.from_config(writer(engine), config.auth.token).ensure_key()
    except KeyDecryptionError as exc:
        raise ConfigError(str(exc)) from None


async def _first_admin(config: Config, engine: AsyncEngine) -> None:
    async with writer(engine).begin() as conn:
        await serialize(conn, SETUP_LOCK_KEY)  # nodes starting together: one creates it
        if await aq.count_users(conn) > 0:
            return
        given = os.environ.get("MOORAGE_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(18)
        await aq.create_user(conn, "admin", hash_password(password), is_admin=True)
    if given:
        log.warning("created administrator 'admin' with the password from MOORAGE_ADMIN_PASSWORD")
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
