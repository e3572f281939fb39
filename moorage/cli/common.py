"""What every ``moorage`` command module shares: the common options, configuration loading, the
audit record of an administrative command, and the command tree capabilities add to.

Command modules (serve, admin, audit, jobs, and each capability's) import this module; nothing
here imports them, so there is no cycle between the entry point and the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from dataclasses import dataclass
from typing import Any

from ..config import Config, ConfigError, load_config


@dataclass
class CommandTree:
    """Where commands are added: ``top`` (``moorage X``) and ``admin`` (``moorage admin X``),
    both argparse sub-parser collections. Every command calls :func:`add_common` on its parser
    and sets ``func`` (``args -> exit code``)."""

    top: Any
    admin: Any


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML configuration file (also MOORAGE_CONFIG)")
    p.add_argument("--data-dir", help="data directory (SQLite database, filesystem store)")


def load(args: argparse.Namespace, **overrides: object) -> Config:
    values = {"data_dir": args.data_dir, **overrides}
    return load_config(args.config, overrides=values)


def check_storage(config: Config) -> None:
    """Settings a driver refuses (e.g. S3 without credentials) are a configuration error, said
    before anything starts."""
    from ..runtime import make_storage
    from ..storage.base import StorageError

    try:
        make_storage(config)
    except StorageError as exc:
        raise ConfigError(str(exc)) from None


def fail(message: str, code: int = 1) -> int:
    """Say what went wrong on standard error; the exit code to return."""
    print(f"moorage: {message}", file=sys.stderr)
    return code


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def audit_cli(config: Config, action: str, **fields: object) -> None:
    """Record an administrative command in the audit log (durably, before returning)."""
    from ..audit import AuditEvent, AuditLog
    from ..db.engine import create_engine, writer

    async def write() -> None:
        engine = create_engine(config.database_url, 1)
        try:
            log_ = AuditLog(writer(engine), config.audit)
            await log_.record_now(
                AuditEvent(action, actor=cli_actor(), actor_type="system", details=fields)
            )
        finally:
            await engine.dispose()

    asyncio.run(write())
