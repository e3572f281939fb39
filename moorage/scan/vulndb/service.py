"""What the API, the UI and ``moorage vulndb status`` show: the sources imported, when, with
what result, and the records per ecosystem; and the refresh job of the configured sources."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ...services.models import Model
from . import store
from .config import VulnDBConfig
from .importer import ImportError_, import_source

log = logging.getLogger("moorage.vulndb")

REFRESH_JOB = "vulndb.refresh"


class SourceStatus(Model):
    name: str = Field(description="A path, or a URL (credentials in it are not shown)")
    kind: str = Field(description="zip, directory, file or url")
    imported_at: datetime | None = Field(None, description="When it was last imported")
    changed_at: datetime | None = Field(None, description="When an import last changed records")
    records: int = Field(description="Records this source holds")
    last_result: dict[str, Any] | None = Field(
        None, description="Counts of the last import: added, updated, unchanged, withdrawn, invalid"
    )
    error: str | None = Field(None, description="Why the last import failed, if it did")


class VulnDBStatus(Model):
    records: int = Field(description="OSV records held (withdrawn included)")
    withdrawn: int
    ecosystems: dict[str, int] = Field(description="Records per ecosystem (key as matched)")
    updated_at: datetime | None = Field(
        None, description="When the data last changed (the scans' database_updated_at)"
    )
    sources: list[SourceStatus]
    configured_sources: list[str] = Field(
        description="Sources the scheduled refresh imports (vulndb.sources)"
    )
    refresh_hours: float


def _shown(name: str) -> str:
    """A URL without user:password."""
    if "://" in name and "@" in name.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = name.split("://", 1)
        host_part, _, path = rest.partition("/")
        return f"{scheme}://{host_part.rsplit('@', 1)[1]}/{path}"
    return name


async def status(engine: AsyncEngine, config: VulnDBConfig) -> VulnDBStatus:
    async with engine.connect() as conn:
        totals = await store.totals(conn)
        sources = await store.sources(conn)
    return VulnDBStatus(
        records=totals["records"],
        withdrawn=totals["withdrawn"],
        ecosystems=totals["ecosystems"],
        updated_at=totals["updated_at"],
        sources=[
            SourceStatus(
                name=_shown(s.name),
                kind=s.kind,
                imported_at=s.imported_at,
                changed_at=s.changed_at,
                records=s.records,
                last_result=s.last_result,
                error=s.error,
            )
            for s in sources
        ],
        configured_sources=[_shown(s) for s in config.sources],
        refresh_hours=config.refresh_hours,
    )


async def refresh(engine: AsyncEngine, config: VulnDBConfig) -> dict[str, Any]:
    """Import every configured source; one failing source does not stop the others (it is
    recorded on its row and in the job's result). Raises when every source failed, so that
    the job queue retries."""
    results: dict[str, Any] = {}
    failed = 0
    for spec in config.sources:
        try:
            r = await import_source(engine, spec, http_timeout=config.http_timeout)
            results[_shown(spec)] = r.as_dict()
        except ImportError_ as exc:
            failed += 1
            results[_shown(spec)] = {"error": str(exc)}
            log.warning("vulndb refresh of %s failed: %s", _shown(spec), exc)
    if config.sources and failed == len(config.sources):
        raise RuntimeError(f"every vulndb source failed: {results}")
    return results


class VulnDB:
    """What the capability keeps in ``rt.services["vulndb"]``: status and an on-demand refresh."""

    def __init__(self, engine: AsyncEngine, config: VulnDBConfig, jobs: Any) -> None:
        self.engine, self.config, self.jobs = engine, config, jobs
        self.access: Any = None  # the AccessService (access control on): who manages policies
        self.audit: Any = None  # the AuditLog: changes through the API and the UI are recorded

    async def record(self, caller: Any, action: str, **details: Any) -> None:
        """Audit a change made by *caller* (the API's or the UI's Caller)."""
        if self.audit is None or caller is None:
            return
        from ...audit import AuditEvent

        p = caller.principal
        await self.audit.record_now(
            AuditEvent(
                action,
                actor=p.name,
                actor_type=p.kind,
                client_addr=getattr(caller, "client_addr", None),
                user_agent=getattr(caller, "user_agent", None),
                details=details,
            )
        )

    async def status(self) -> VulnDBStatus:
        return await status(self.engine, self.config)

    async def may_manage(self, principal: Any, target: str, write: bool) -> bool:
        """Whether *principal* may read (or, *write*, change) the policy of *target*: system
        administrators any; a user the policy of an organization they hold the admin role on
        (or their personal namespace), and of a repository they hold the admin role on
        (directly, by team or through its organization). Robots and bearer tokens: none —
        a policy is a person's decision. A personal access token needs api:read / api:write."""
        from ...auth.scopes import ADMIN

        p = principal
        if p is None or p.kind != "user" or p.token_scopes is not None:
            return False
        if not p.may_use_api(write=write):
            return False
        if p.is_admin:
            return True
        if self.access is None:
            return False
        if "/" in target:
            return ADMIN in await self.access.allowed_actions(p, target)
        if target == p.name:
            return True
        return ADMIN in await self.access.organization_actions(p, target)

    async def policies(self, principal: Any = None) -> list[PolicyModel]:
        """Every policy, or with *principal* those it may manage."""
        async with self.engine.connect() as conn:
            rows = await store.policies(conn)
        out = []
        for r in rows:
            if principal is None or await self.may_manage(principal, r.target, write=False):
                out.append(_policy_model(r))
        return out

    async def policy(self, target: str) -> PolicyModel | None:
        for p in await self.policies():
            if p.target == target:
                return p
        return None

    async def set_policy(self, target: str, body: PolicyBody, actor: str) -> PolicyModel:
        from ...db.engine import writer
        from ...hooks.service import parse_target
        from .policy import allow_to_json, check_level

        scope, target = parse_target(target)
        level = check_level(body.block_severity)
        allow = tuple(_allow_entry(a) for a in body.allow)
        async with writer(self.engine).begin() as conn:
            await store.put_policy(
                conn,
                scope=scope,
                target=target,
                block_severity=level,
                fixable_only=body.fixable_only,
                block_unscanned=body.block_unscanned,
                allow=allow_to_json(allow),
                actor=actor,
            )
        return PolicyModel(
            scope=scope,
            target=target,
            block_severity=level,
            fixable_only=body.fixable_only,
            block_unscanned=body.block_unscanned,
            allow=[AllowModel(**a.as_dict()) for a in allow],
        )

    async def delete_policy(self, target: str) -> bool:
        from ...db.engine import writer

        async with writer(self.engine).begin() as conn:
            return await store.delete_policy(conn, target)

    async def queue_refresh(self) -> int | None:
        job_id: int | None = await self.jobs.enqueue(REFRESH_JOB, {}, dedupe_key="refresh")
        return job_id


class AllowModel(Model):
    id: str = Field(min_length=2, max_length=128, description="Advisory id, alias or upstream id")
    expires: str | None = Field(None, description="Allowed through this date (YYYY-MM-DD, UTC)")
    reason: str = Field("", max_length=500)


class PolicyModel(Model):
    scope: str = Field(description="namespace or repository")
    target: str
    block_severity: str = Field(description="critical, high, medium, low or none")
    fixable_only: bool = False
    block_unscanned: bool = False
    allow: list[AllowModel] = Field(default_factory=list)


class PolicyBody(Model):
    block_severity: str = Field(description="critical, high, medium, low or none")
    fixable_only: bool = False
    block_unscanned: bool = False
    allow: list[AllowModel] = Field(default_factory=list, max_length=1000)


class PolicyList(Model):
    items: list[PolicyModel]


def _policy_model(r: Any) -> PolicyModel:
    from .policy import allow_from_json

    return PolicyModel(
        scope=r.scope,
        target=r.target,
        block_severity=r.block_severity,
        fixable_only=bool(r.fixable_only),
        block_unscanned=bool(r.block_unscanned),
        allow=[AllowModel(**a.as_dict()) for a in allow_from_json(r.allow)],
    )


def _allow_entry(a: AllowModel) -> Any:
    """An API allow-list entry: the id as the command line takes it (without a date suffix),
    the expiry as a date of its own."""
    from datetime import date

    from ...services.errors import Invalid
    from .policy import AllowEntry, parse_allow

    entry = parse_allow(a.id, a.reason)
    if entry.expires is not None:
        raise Invalid("allow", "give the expiry in 'expires', not after the id")
    if a.expires is None:
        return entry
    try:
        expires = date.fromisoformat(a.expires)
    except ValueError:
        raise Invalid("allow", f"expires {a.expires[:40]!r} is not a date (YYYY-MM-DD)") from None
    return AllowEntry(entry.id, expires, entry.reason)
