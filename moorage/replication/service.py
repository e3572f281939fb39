"""The replication service: remotes, policies, starting executions and reading their history.

It checks and stores; it never copies (jobs.py does, on whichever node claims the job). The
command line calls it directly (beside a running server); the REST API and the UI through
:class:`~moorage.replication.admin.ReplicationAdmin`, which adds who may and the audit record.

Remote credentials are stored encrypted with ``auth.token.key_encryption_secret``
(moorage/auth/keycrypt.py, bound to the remote's name): without that secret, a remote with
credentials is refused rather than stored in clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth import keycrypt
from ..db import job_queries
from ..db.engine import writer
from ..db.queries import now
from ..jobs.runner import JobRunner
from ..oci.names import valid_name
from ..services.context import ServiceContext
from ..services.errors import Conflict, Invalid, Missing
from . import filters
from . import queries as q
from .auth import Credentials
from .client import RegistryClient
from .copy import _Platform
from .errors import ReplicationError
from .hooks import Finished
from .models import Timeouts, TLSOptions
from .models_api import (
    CheckResult,
    Execution,
    Policy,
    PolicyCreate,
    Remote,
    RemoteCreate,
    Task,
)
from .ratelimit import BandwidthLimiter

PLAN_JOB = "replication.plan"
TAG_JOB = "replication.tag"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_MAX_TEXT = 4096
_KID = "replication-remote:"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise Invalid("name", f"{what} name is 1-64 of a-z 0-9 . _ - (starting with a letter or digit)")
    return value


def _text(value: str | None, field: str, limit: int = _MAX_TEXT) -> str:
    value = value or ""
    if len(value) > limit or "\x00" in value:
        raise Invalid(field, f"{field} is text of at most {limit} characters")
    return value


def _pattern(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        filters.compile_pattern(value)
    except filters.PatternError as exc:
        raise Invalid(field, str(exc)) from None
    return value


@dataclass(frozen=True, slots=True)
class Triggers:
    on_event: bool
    cron: str | None

    @classmethod
    def parse(cls, values: list[str]) -> Triggers:
        on_event, cron = False, None
        for value in values:
            v = value.strip()
            if v == "manual":
                continue
            if v == "event":
                on_event = True
            elif v.startswith("cron:"):
                if cron is not None:
                    raise Invalid("triggers", "one cron trigger per policy")
                try:
                    cron = filters.check_cron(v[len("cron:") :])
                except filters.PatternError as exc:
                    raise Invalid("triggers", str(exc)) from None
            else:
                raise Invalid("triggers", f"trigger {v[:40]!r} is not manual, event or cron:EXPR")
        return cls(on_event, cron)

    def names(self) -> list[str]:
        out = ["manual"]
        if self.on_event:
            out.append("event")
        if self.cron:
            out.append(f"cron:{self.cron}")
        return out


def remote_model(r: q.RemoteRow) -> Remote:
    return Remote(
        name=r.name,
        url=r.url,
        username=r.username,
        has_password=r.secret is not None,
        insecure=r.insecure,
        has_ca=bool(r.ca_pem),
        site=r.site,
        peer_site_id=r.peer_site_id,
        description=r.description,
        created_at=r.created_at,
        checked_at=r.checked_at,
        check_ok=r.check_ok,
        check_message=r.check_message,
    )


def policy_model(p: q.PolicyRow) -> Policy:
    return Policy(
        name=p.name,
        remote=p.remote_name,
        direction=p.direction,
        source=p.source,
        tags=p.tags,
        exclude=p.exclude,
        labels=p.labels,
        artifact_types=p.artifact_types,
        dest_namespace=p.dest_namespace,
        triggers=Triggers(p.on_event, p.cron).names(),
        platforms=p.platforms,
        referrers=p.referrers,
        replicate_deletes=p.replicate_deletes,
        forward_replicated=p.forward_replicated,
        bandwidth_limit=p.bandwidth_limit,
        enabled=p.enabled,
        description=p.description,
        created_by=p.created_by,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def task_model(t: q.TaskRow) -> Task:
    return Task(
        id=t.id,
        operation=t.operation,
        src_repo=t.src_repo,
        dst_repo=t.dst_repo,
        ref=t.ref,
        state=t.state,
        outcome=t.outcome,
        digest=t.digest,
        bytes=t.bytes,
        duration=round(t.duration, 3),
        attempts=t.attempts,
        error=t.error,
        node=t.node,
        detail=t.detail,
        started_at=t.started_at,
        finished_at=t.finished_at,
    )


def execution_model(e: q.ExecutionRow, tasks: list[q.TaskRow] | None = None) -> Execution:
    duration = None
    if e.finished_at is not None:
        duration = round((e.finished_at - e.created_at).total_seconds(), 3)
    return Execution(
        id=e.id,
        policy=e.policy_name,
        trigger=e.trigger,
        triggered_by=e.triggered_by,
        state=e.state,
        total=e.total,
        done=e.done,
        succeeded=e.succeeded,
        failed=e.failed,
        bytes=e.bytes,
        message=e.message,
        created_at=e.created_at,
        finished_at=e.finished_at,
        duration=duration,
        tasks=[task_model(t) for t in tasks] if tasks is not None else None,
    )


class ReplicationService:
    def __init__(self, ctx: ServiceContext, jobs: JobRunner | None = None) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.secret = ctx.config.auth.token.key_encryption_secret
        # "replication finished" subscribers (hooks.py): webhooks subscribe here.
        self.finished = Finished()

    def _tx(self) -> Any:
        return writer(self.ctx.write_engine).begin()

    async def site_id(self) -> str:
        async with self._tx() as conn:
            return await q.site_id(conn)

    # --- remotes ------------------------------------------------------------------------------

    def _seal(self, name: str, password: str) -> str:
        if not self.secret:
            raise Invalid(
                "password",
                "remote credentials are stored encrypted: set auth.token.key_encryption_secret "
                "(MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET) on every node first",
            )
        return keycrypt.encrypt_pem(self.secret, _KID + name, password)

    def credentials(self, r: q.RemoteRow) -> Credentials | None:
        if r.username is None:
            return None
        password = ""
        if r.secret is not None:
            password = keycrypt.decrypt_pem(self.secret, _KID + r.name, r.secret)
        return Credentials(r.username, password)

    def client(
        self, r: q.RemoteRow, limiter: BandwidthLimiter | None = None, **kwargs: Any
    ) -> RegistryClient:
        tls = TLSOptions(verify=not r.insecure, ca_pem=r.ca_pem or None)
        return RegistryClient(r.url, self.credentials(r), tls, Timeouts(), limiter, **kwargs)

    async def add_remote(self, spec: RemoteCreate) -> Remote:
        name = _check_name(spec.name, "remote")
        url = spec.url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s?#]+$", url) or len(url) > 500:
            raise Invalid("url", "the URL is http(s)://host[:port] (no path)")
        username = spec.username or None
        if username is not None and (len(username) > 255 or ":" in username):
            raise Invalid("username", "the username is at most 255 characters, without ':'")
        if spec.password and username is None:
            raise Invalid("password", "a password needs a username")
        if spec.ca_pem:
            try:
                TLSOptions(ca_pem=spec.ca_pem).context()
            except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError
                raise Invalid("ca_pem", f"the CA certificates cannot be loaded: {exc}") from None
        secret = self._seal(name, spec.password) if spec.password else None
        async with self._tx() as conn:
            if await q.remote_by_name(conn, name) is not None:
                raise Conflict(f"a remote named {name} exists")
            await q.insert_remote(
                conn,
                name=name,
                url=url,
                username=username,
                secret=secret,
                insecure=spec.insecure,
                ca_pem=spec.ca_pem or None,
                site=spec.site,
                description=_text(spec.description, "description"),
            )
            row = await q.remote_by_name(conn, name)
        assert row is not None
        return remote_model(row)

    async def _remote(self, conn: AsyncConnection, name: str) -> q.RemoteRow:
        row = await q.remote_by_name(conn, name)
        if row is None:
            raise Missing(f"no remote {name}")
        return row

    async def remote(self, name: str) -> q.RemoteRow:
        async with self.ctx.engine.connect() as conn:
            return await self._remote(conn, name)

    async def remotes(self) -> list[Remote]:
        async with self.ctx.engine.connect() as conn:
            return [remote_model(r) for r in await q.remotes(conn)]

    async def delete_remote(self, name: str) -> None:
        async with self._tx() as conn:
            row = await self._remote(conn, name)
            used = await q.policies_using(conn, row.id)
            if used:
                raise Conflict(f"remote {name} is used by policies {', '.join(used[:10])}")
            await q.delete_remote(conn, row.id)

    async def check_remote(self, name: str) -> CheckResult:
        """``GET /v2/`` with the stored credentials (and, for a site, its site id)."""
        row = await self.remote(name)
        result = CheckResult(remote=name, ok=False, message="")
        try:
            async with self.client(row) as client:
                ping = await client.ping()
            result.api_version = ping.api_version
            result.authenticated = ping.authenticated
            if not ping.authenticated:
                result.message = "reachable, but it wants credentials and none are stored"
            else:
                result.ok = True
                result.message = f"ok ({ping.auth or 'no'} authentication)"
            if result.ok and row.site:
                from .identities import peer_site

                result.peer_site_id = await peer_site(self, row)
        except ReplicationError as exc:
            result.message = str(exc) or type(exc).__name__
        except keycrypt.KeyDecryptionError as exc:
            result.message = str(exc)
        async with self._tx() as conn:
            await q.record_check(conn, row.id, result.ok, result.message, result.peer_site_id)
        return result

    # --- policies -----------------------------------------------------------------------------

    async def add_policy(self, spec: PolicyCreate, by: str | None) -> Policy:
        name = _check_name(spec.name, "policy")
        if spec.direction not in ("push", "pull"):
            raise Invalid("direction", "direction is push or pull")
        source = _pattern(spec.source, "source")
        if source is None:
            raise Invalid("source", "a source repository pattern is required")
        triggers = Triggers.parse(spec.triggers)
        if triggers.on_event and spec.direction == "pull":
            raise Invalid(
                "triggers",
                "event triggers react to pushes here: for push policies only (a pull policy "
                "runs manually or on a cron schedule)",
            )
        if spec.dest_namespace and not valid_name(spec.dest_namespace.strip("/")):
            raise Invalid("dest_namespace", "the destination namespace is not a valid name")
        for p in spec.platforms or []:
            try:
                _Platform.parse(p)
            except ValueError as exc:
                raise Invalid("platforms", str(exc)) from None
        if spec.bandwidth_limit is not None and spec.bandwidth_limit < 1024:
            raise Invalid("bandwidth_limit", "the bandwidth limit is at least 1024 bytes/s")
        labels = spec.labels or None
        if labels is not None and (
            len(labels) > 32 or any(len(k) > 255 or len(v) > 1024 for k, v in labels.items())
        ):
            raise Invalid("labels", "at most 32 labels of reasonable length")
        types = spec.artifact_types or None
        if types is not None and (len(types) > 32 or any(len(t) > 255 for t in types)):
            raise Invalid("artifact_types", "at most 32 artifact types")
        async with self._tx() as conn:
            remote = await self._remote(conn, spec.remote)
            if await q.policy_by_name(conn, name) is not None:
                raise Conflict(f"a policy named {name} exists")
            await q.insert_policy(
                conn,
                name=name,
                remote_id=remote.id,
                direction=spec.direction,
                source=source,
                tags=_pattern(spec.tags, "tags"),
                exclude=_pattern(spec.exclude, "exclude"),
                labels=labels,
                artifact_types=types,
                dest_namespace=spec.dest_namespace.strip("/") if spec.dest_namespace else None,
                on_event=triggers.on_event,
                cron=triggers.cron,
                cron_last_at=now() if triggers.cron else None,
                platforms=list(spec.platforms) if spec.platforms else None,
                referrers=spec.referrers,
                replicate_deletes=spec.replicate_deletes,
                forward_replicated=spec.forward_replicated,
                bandwidth_limit=spec.bandwidth_limit,
                enabled=spec.enabled,
                description=_text(spec.description, "description"),
                created_by=by,
            )
            row = await q.policy_by_name(conn, name)
        assert row is not None
        return policy_model(row)

    async def _policy(self, conn: AsyncConnection, name: str) -> q.PolicyRow:
        row = await q.policy_by_name(conn, name)
        if row is None:
            raise Missing(f"no replication policy {name}")
        return row

    async def policy(self, name: str) -> q.PolicyRow:
        async with self.ctx.engine.connect() as conn:
            return await self._policy(conn, name)

    async def policies(self) -> list[Policy]:
        async with self.ctx.engine.connect() as conn:
            return [policy_model(p) for p in await q.policies(conn)]

    async def update_policy(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        triggers: list[str] | None = None,
        bandwidth_limit: int | None = None,
        description: str | None = None,
    ) -> Policy:
        values: dict[str, Any] = {}
        if enabled is not None:
            values["enabled"] = enabled
        if description is not None:
            values["description"] = _text(description, "description")
        if bandwidth_limit is not None:
            if bandwidth_limit != 0 and bandwidth_limit < 1024:
                raise Invalid("bandwidth_limit", "at least 1024 bytes/s (0: no limit)")
            values["bandwidth_limit"] = bandwidth_limit or None
        async with self._tx() as conn:
            row = await self._policy(conn, name)
            if triggers is not None:
                t = Triggers.parse(triggers)
                if t.on_event and row.direction == "pull":
                    raise Invalid("triggers", "event triggers are for push policies")
                values.update(on_event=t.on_event, cron=t.cron)
                if t.cron and t.cron != row.cron:
                    values["cron_last_at"] = now()
            if values:
                await q.update_policy(conn, row.id, **values)
            updated = await self._policy(conn, name)
        return policy_model(updated)

    async def delete_policy(self, name: str) -> None:
        async with self._tx() as conn:
            row = await self._policy(conn, name)
            await q.delete_policy(conn, row.id)

    # --- executions ---------------------------------------------------------------------------

    async def start(
        self,
        policy: str,
        trigger: str = "manual",
        by: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> int:
        """Start an execution: a planning job lists and filters the source, then queues one
        job per tag. Returns the execution id."""
        if conn is None:
            async with self._tx() as own:
                execution_id = await self.start(policy, trigger, by, own)
            if self.jobs is not None:
                self.jobs.wake()
            return execution_id
        row = await self._policy(conn, policy)
        if not row.enabled and trigger != "manual":
            raise Conflict(f"policy {policy} is disabled")
        execution_id = await q.insert_execution(conn, row.id, trigger, by)
        await job_queries.enqueue(
            conn,
            PLAN_JOB,
            {"execution": execution_id},
            max_attempts=self.ctx.config.jobs.max_attempts,
        )
        return execution_id

    async def executions(
        self, policy: str, limit: int = 50, before: int | None = None
    ) -> list[Execution]:
        async with self.ctx.engine.connect() as conn:
            row = await self._policy(conn, policy)
            found = await q.executions(conn, row.id, limit, before)
        return [execution_model(e) for e in found]

    async def execution(self, execution_id: int, with_tasks: bool = True) -> Execution:
        async with self.ctx.engine.connect() as conn:
            e = await q.execution(conn, execution_id)
            if e is None:
                raise Missing(f"no replication execution {execution_id}")
            tasks = await q.tasks(conn, execution_id) if with_tasks else None
        return execution_model(e, tasks)
