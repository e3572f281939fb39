"""Wiring: the services of one process, built from a configuration.

The one place that turns a :class:`~moorage.config.Config` into working parts — database
engines, the blob store, the audit log, access control, the management services, the job runner
and every installed capability (moorage/capabilities.py) — for each kind of process:

- ``moorage serve`` (moorage/app.py, the ASGI application, adds the web layer on top),
- ``moorage worker`` (jobs only, no HTTP),
- command-line commands that need services (``moorage admin rotate-keys``, capability commands).

It sits below the web layer: it imports services, auth, db, storage and the capabilities'
wiring, never moorage/app.py, the REST API or the UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .audit import AuditLog
from .auth.service import AccessService
from .auth.sessions import SessionStore
from .auth.tokens import TokenService
from .capabilities import installed
from .capability import Capability
from .config import Config
from .db.engine import create_engine, writer
from .db.hotpath import hot_reads_for
from .db.writers import write_path_for
from .jobs.runner import JobRunner
from .jobs.tasks import register_standard_jobs
from .services.catalog import CatalogService
from .services.context import ServiceContext
from .services.management import ManagementService
from .storage.base import StorageDriver
from .storage.filesystem import FilesystemDriver

if TYPE_CHECKING:  # imported when single sign-on is on: it pulls in httpx and joserfc
    from .auth.oidc import OIDCClient

log = logging.getLogger("moorage")


def make_storage(config: Config) -> StorageDriver:
    if config.storage.driver == "s3":
        from .storage.s3 import S3Driver, S3Settings

        s3 = config.storage.s3
        return S3Driver(
            S3Settings(
                bucket=s3.bucket or "",
                region=s3.region,
                endpoint=s3.endpoint,
                access_key_id=s3.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID", ""),
                secret_access_key=s3.secret_access_key
                or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                prefix=s3.prefix,
                path_style=None if s3.path_style == "auto" else bool(s3.path_style),
                redirect=s3.redirect,
                redirect_expiry_seconds=s3.redirect_expiry_seconds,
            )
        )
    return FilesystemDriver(
        config.storage_root, reader_threads=config.storage.filesystem.reader_threads
    )


def build_access_service(config: Config, ctx: ServiceContext) -> AccessService:
    tokens = TokenService.from_config(ctx.write_engine, config.auth.token)
    directory = None
    if config.auth.ldap.enabled:
        from .auth.ldap import LDAPAuthenticator

        directory = LDAPAuthenticator(config.auth.ldap)
    return AccessService(ctx.engine, ctx.write_engine, config.auth, tokens, directory)


def open_context(config: Config, pool_size: int | None = None) -> ServiceContext:
    """Engines, blob store and hot-path readers (no background task started)."""
    size = pool_size or config.database.pool_size
    engine = create_engine(config.database_url, size)
    storage = make_storage(config)
    hot = hot_reads_for(config.database_url, size)
    writes = write_path_for(config.database_url, hot)
    return ServiceContext(config, engine, writer(engine), storage, hot, writes)


async def close_context(ctx: ServiceContext) -> None:
    await ctx.writes.close()
    await ctx.storage.close()
    await ctx.hot.close()
    await ctx.engine.dispose()


@dataclass
class Runtime:
    """One process's services. ``access`` and what depends on it (sessions, catalog,
    management) are None when access control is off (``--no-auth``)."""

    config: Config
    ctx: ServiceContext
    audit: AuditLog
    jobs: JobRunner
    capabilities: tuple[Capability, ...]
    access: AccessService | None = None
    sessions: SessionStore | None = None
    catalog: CatalogService | None = None
    management: ManagementService | None = None
    oidc: OIDCClient | None = None  # single sign-on (auth.oidc), for the web UI
    # Each capability's services, by capability name (set by its setup()).
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def job_kinds(self) -> frozenset[str]:
        return frozenset(self.jobs.handlers)


async def start_runtime(
    config: Config,
    *,
    run_jobs: bool | None = None,
    capabilities: tuple[Capability, ...] | None = None,
    pool_size: int | None = None,
) -> Runtime:
    """Build every service and start the audit flusher; start the job runner when *run_jobs*
    (default: ``jobs.enabled``). Stop it with :func:`stop_runtime`."""
    ctx = open_context(config, pool_size)
    audit = AuditLog(ctx.write_engine, config.audit)
    await audit.start()
    rt = Runtime(
        config,
        ctx,
        audit,
        JobRunner(ctx.write_engine, config.jobs),
        installed() if capabilities is None else capabilities,
    )
    try:
        if config.auth.enabled:
            rt.access = build_access_service(config, ctx)
            await rt.access.tokens.ensure_key()
            rt.sessions = SessionStore(ctx.write_engine, config.auth.session)
            rt.catalog = CatalogService(ctx, rt.access)
            rt.management = ManagementService(ctx, rt.access, audit, rt.sessions)
            if config.auth.oidc.enabled:
                from .auth.oidc import OIDCClient

                rt.oidc = OIDCClient(config.auth.oidc)
        register_standard_jobs(rt.jobs, ctx, audit, rt.sessions)
        for cap in rt.capabilities:
            if cap.setup is not None:
                await cap.setup(rt)
    except BaseException:
        await stop_runtime(rt)
        raise
    if config.jobs.enabled if run_jobs is None else run_jobs:
        rt.jobs.start()
    return rt


async def stop_runtime(rt: Runtime) -> None:
    await rt.jobs.stop()
    for cap in reversed(rt.capabilities):
        if cap.shutdown is not None:
            try:
                await cap.shutdown(rt)
            except Exception:  # noqa: BLE001 - one capability must not keep the rest open
                log.exception("stopping %s failed", cap.name)
    if rt.oidc is not None:
        await rt.oidc.aclose()
    await rt.audit.stop()
    await close_context(rt.ctx)


@asynccontextmanager
async def runtime(
    config: Config, *, run_jobs: bool = False, pool_size: int | None = 2
) -> AsyncIterator[Runtime]:
    """A short-lived runtime for a command-line command (no job runner by default; a small
    pool): ``async with runtime(config) as rt: ...``."""
    rt = await start_runtime(config, run_jobs=run_jobs, pool_size=pool_size)
    try:
        yield rt
    finally:
        await stop_runtime(rt)
