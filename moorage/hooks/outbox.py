"""Events into the outbox: a delivery row and its ``hooks.deliver`` job per subscribed webhook,
written on the caller's connection so that they commit with the change they announce.

- push and delete: subscribers of the domain events (moorage/services/events.py), called in
  the transaction of the push or the delete;
- pull: an audit sink (moorage/audit/store.py): pulls are recorded off the request path by the
  audit log's flusher, and the sink turns the batch's successful manifest pulls into
  deliveries in the same transaction — a pull itself writes nothing. Pull events therefore
  follow ``audit.pull_events`` (sampled or aggregated pulls give sampled or aggregated events,
  with ``moorage.count``) and need ``audit.enabled``;
- scan: a subscriber of :class:`ScanCompleted` (moorage/services/events.py), published by the
  scan job in the transaction that records the final result;
- policy: an audit sink, as for pulls: a pull refused by a vulnerability policy
  (``vulnerability.pull.denied``) or by a signed-only trust policy (``trust.pull.denied``) is
  audited off the request path, and the sink turns the batch's refusals into deliveries — a
  refused pull writes nothing either. Needs ``audit.enabled`` (refusals are never sampled);
- replication: a subscriber of replication's "finished" hook (moorage/replication/hooks.py),
  called in the transaction that closes the execution;
- anything else may call :func:`publish` with an event built by the builders of payloads.py,
  on its own transaction's connection.

A Distribution-format delivery holds up to :data:`BATCH` events (one envelope); a CloudEvents
delivery holds one (structured mode), since batch mode is not what most receivers parse.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit.events import Action, AuditEvent
from ..config import Config
from ..db import job_queries
from ..logs import request_id
from ..oci import mediatypes as mt
from ..services.events import (
    ManifestDeleted,
    ManifestPushed,
    RepositoryDeleted,
    ScanCompleted,
    TagDeleted,
)
from . import queries as q
from .config import WebhooksConfig
from .delivery import DELIVER
from .payloads import (
    Event,
    RequestInfo,
    Source,
    Target,
    delete_event,
    policy_violation_event,
    pull_event,
    push_event,
    render,
    replication_finished_event,
    scan_completed_event,
)

if TYPE_CHECKING:
    from ..replication.hooks import ExecutionFinished

BATCH = 50


@dataclass(frozen=True, slots=True)
class Settings:
    """What every delivery written by this process gets (set by the capability's setup)."""

    max_attempts: int
    source: Source
    base_url: str | None = None


_settings = Settings(
    WebhooksConfig().max_attempts, Source(socket.gethostname(), socket.gethostname())
)


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def configure_from(config: Config) -> None:
    """This process's settings from the configuration (the capability's setup, the CLI)."""
    host = socket.gethostname()
    configure(
        Settings(
            config.webhooks.max_attempts,
            Source(
                addr=f"{host}:{config.http.port}",
                instance_id=host,
                base_url=config.http.base_url or "",
            ),
            config.http.base_url,
        )
    )


def source() -> Source:
    """The node that emits events (Distribution's ``source``; CloudEvents ``source``)."""
    return _settings.source


def manifest_url(repository: str, reference: str) -> str | None:
    """Where a client fetches a manifest, when ``http.base_url`` is set."""
    base = _settings.base_url
    return f"{base.rstrip('/')}/v2/{repository}/manifests/{reference}" if base else None


async def publish(conn: AsyncConnection, event: Event, *, repository: str | None = None) -> int:
    """Queue *event* for every enabled webhook that wants its kind, on the repository it is
    about (``event.target.repository``, or *repository*) and on that repository's namespace.
    Call it on the connection of the transaction that made the change; nothing is sent before
    that transaction commits. Returns the number of deliveries queued."""
    repo = repository or (event.target.repository if event.target else None)
    if not repo:
        return 0
    hooks = await q.subscribed_to(conn, repo, event.kind)
    for hook in hooks:
        await enqueue(conn, hook, [event], repo)
    return len(hooks)


async def enqueue(
    conn: AsyncConnection, hook: q.WebhookRow, events: Sequence[Event], repository: str | None
) -> list[int]:
    """Deliveries of *events* to *hook* (batched by its format) and their jobs."""
    size = BATCH if hook.format == "distribution" else 1
    ids: list[int] = []
    for start in range(0, len(events), size):
        chunk = list(events[start : start + size])
        body, content_type = render(chunk, hook.format)  # type: ignore[arg-type]
        delivery_id = await q.insert_delivery(
            conn,
            uid=str(uuid.uuid4()),
            webhook_id=hook.id,
            kind=chunk[0].kind,
            event_count=len(chunk),
            repository=repository,
            content_type=content_type,
            body=body.decode("utf-8"),
            max_attempts=_settings.max_attempts,
        )
        job_id = await job_queries.enqueue(
            conn, DELIVER, {"delivery": delivery_id}, max_attempts=_settings.max_attempts
        )
        await q.set_job(conn, delivery_id, job_id)
        ids.append(delivery_id)
    return ids


_IMAGE_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG})


def _artifact(artifact_type: str | None) -> str | None:
    """The artifact type worth announcing: none for a plain image (the column holds its config
    type), else the artifact's (a Helm chart, an SBOM, …)."""
    return None if artifact_type in _IMAGE_CONFIGS else artifact_type


def _request(_actor: str | None, method: str) -> RequestInfo:
    rid = request_id.get()
    return RequestInfo(id="" if rid in ("", "-") else rid, method=method)


# --- domain events (in the change's transaction) -----------------------------------------------


async def on_push(conn: AsyncConnection, e: ManifestPushed) -> None:
    hooks = await q.subscribed_to(conn, e.repository, "push")
    if not hooks:
        return
    facts = await q.manifest_facts(conn, [(e.repository, e.digest)])
    media_type, size, artifact_type = facts.get(
        (e.repository, e.digest), (e.media_type, 0, e.artifact_type)
    )
    base = Target(
        repository=e.repository,
        digest=e.digest,
        media_type=media_type,
        size=size,
        url=manifest_url(e.repository, e.digest),
        artifact_type=_artifact(artifact_type),
    )
    request = _request(e.actor, "PUT")
    targets = [replace(base, tag=t) for t in e.tags] or [base]
    events = [push_event(t, source(), e.actor or "", request) for t in targets]
    for hook in hooks:
        await enqueue(conn, hook, events, e.repository)


async def _deleted(conn: AsyncConnection, target: Target, actor: str | None) -> None:
    await publish(conn, delete_event(target, source(), actor or "", _request(actor, "DELETE")))


async def on_tag_deleted(conn: AsyncConnection, e: TagDeleted) -> None:
    # As Distribution: a tag deletion names the repository and the tag.
    await _deleted(conn, Target(repository=e.repository, tag=e.tag), e.actor)


async def on_manifest_deleted(conn: AsyncConnection, e: ManifestDeleted) -> None:
    await _deleted(conn, Target(repository=e.repository, digest=e.digest), e.actor)


async def on_repository_deleted(conn: AsyncConnection, e: RepositoryDeleted) -> None:
    await _deleted(conn, Target(repository=e.repository), e.actor)


# --- pulls (in the audit log's batch transaction) ------------------------------------------------


async def pull_sink(conn: AsyncConnection, batch: Sequence[AuditEvent]) -> None:
    """Successful manifest pulls of an audit batch → pull deliveries (one SELECT when nobody
    subscribed to pulls of these repositories)."""
    pulls = [
        e
        for e in batch
        if e.action == Action.MANIFEST_PULL and e.result == "success" and e.repository
    ]

    def build(e: AuditEvent, target: Target, request: RequestInfo) -> Event:
        event = pull_event(target, source(), e.actor, request)
        count = e.details.get("count") if e.details.get("aggregated") else None
        details: dict[str, Any] = {"count": count} if isinstance(count, int) else {}
        return replace(event, time=e.time, details=details)

    await _deliver_audit_records(conn, pulls, "pull", build)


async def _deliver_audit_records(
    conn: AsyncConnection,
    records: Sequence[AuditEvent],
    kind: str,
    build: Callable[[AuditEvent, Target, RequestInfo], Event],
) -> None:
    """Audit records about manifests (pulls, refused pulls) → one delivery per webhook
    subscribed to *kind* for their repositories, each record made an event by *build*."""
    if not records:
        return
    by_repo = await q.subscribed(conn, {str(e.repository) for e in records}, kind)
    if not by_repo:
        return
    wanted = [e for e in records if e.repository in by_repo]
    facts = await q.manifest_facts(
        conn, {(str(e.repository), e.digest) for e in wanted if e.digest}
    )
    per_hook: dict[int, tuple[q.WebhookRow, list[Event]]] = {}
    for e in wanted:
        repo = str(e.repository)
        media_type, size, artifact_type = facts.get((repo, e.digest or ""), ("", 0, None))
        target = Target(
            repository=repo,
            digest=e.digest or "",
            media_type=media_type,
            size=size,
            tag=e.tag,
            url=manifest_url(repo, e.digest) if e.digest else None,
            artifact_type=_artifact(artifact_type),
        )
        request = RequestInfo(
            id=e.request_id or "",
            addr=e.client_addr or "",
            method="GET",
            useragent=e.user_agent or "",
        )
        event = build(e, target, request)
        for hook in by_repo[repo]:
            per_hook.setdefault(hook.id, (hook, []))[1].append(event)
    for hook, events in per_hook.values():
        repos = {ev.target.repository for ev in events if ev.target}
        await enqueue(conn, hook, events, repos.pop() if len(repos) == 1 else None)


# --- scans (in the transaction recording the result) ---------------------------------------------

_SCAN_STATUSES = ("done", "failed", "unsupported")


def report_url(repository: str, digest: str) -> str | None:
    """The scan report in the API, when ``http.base_url`` is set."""
    base = _settings.base_url
    if not base:
        return None
    return f"{base.rstrip('/')}/api/v1/repositories/{repository}/-/manifests/{digest}/vulnerabilities"


async def on_scan_completed(conn: AsyncConnection, e: ScanCompleted) -> None:
    if e.status not in _SCAN_STATUSES:
        return
    hooks = await q.subscribed_to(conn, e.repository, "scan")
    if not hooks:
        return
    facts = await q.manifest_facts(conn, [(e.repository, e.digest)])
    media_type, size, artifact_type = facts.get((e.repository, e.digest), ("", 0, None))
    target = Target(
        repository=e.repository,
        digest=e.digest,
        media_type=media_type,
        size=size,
        url=manifest_url(e.repository, e.digest),
        artifact_type=_artifact(artifact_type),
    )
    event = scan_completed_event(
        target,
        source(),
        status=cast(Literal["done", "failed", "unsupported"], e.status),
        summary=dict(e.summary),
        scanned_at=e.scanned_at or datetime.now(UTC),
        database_updated_at=e.database_updated_at,
        report_url=report_url(e.repository, e.digest),
    )
    for hook in hooks:
        await enqueue(conn, hook, [event], e.repository)


# --- policy refusals (in the audit log's batch transaction) --------------------------------------

# The audit actions of refused pulls (moorage/scan/vulndb/rule.py, moorage/trust/rule.py) and
# the policy kind each one names in the payload.
POLICY_ACTIONS = {"vulnerability.pull.denied": "vulnerability", "trust.pull.denied": "signature"}


def _refusal_reason(e: AuditEvent) -> str:
    d = e.details
    message = d.get("message")
    if isinstance(message, str) and message:
        return message
    verdict = d.get("verdict")
    missing = d.get("missing")
    parts = [str(verdict)] if verdict else []
    if isinstance(missing, list) and missing:
        parts.append("missing: " + ", ".join(str(m) for m in missing[:10]))
    return "; ".join(parts) or "refused by policy"


async def policy_sink(conn: AsyncConnection, batch: Sequence[AuditEvent]) -> None:
    """Pulls refused by a vulnerability or trust policy in an audit batch → policy deliveries
    (nothing but the audit record is written when nobody subscribed)."""
    refusals = [
        e
        for e in batch
        if e.action in POLICY_ACTIONS and e.result == "denied" and e.repository
    ]

    def build(e: AuditEvent, target: Target, request: RequestInfo) -> Event:
        kind = POLICY_ACTIONS[e.action]
        name = e.details.get("policy")
        event = policy_violation_event(
            target,
            source(),
            policy=f"{kind}:{name}" if name else kind,
            reason=_refusal_reason(e),
            action="pull",
            actor=e.actor,
            request=request,
        )
        return replace(event, time=e.time)

    await _deliver_audit_records(conn, refusals, "policy", build)


# --- replication (in the transaction closing the execution) --------------------------------------

_WILDCARDS = frozenset("*?{}[]")


def _literal_namespace(pattern: str) -> str | None:
    """The namespace a repository pattern stays within, when its first segment is literal."""
    first = pattern.strip("/").split("/", 1)[0]
    return first if first and not (_WILDCARDS & set(first)) else None


async def on_replication_finished(conn: AsyncConnection, e: ExecutionFinished) -> None:
    """One ``replication`` delivery per webhook subscribed on any local repository the
    execution touched (or on the namespace of its pattern, for one with no tasks)."""
    repos = list(e.repositories)
    if not repos:
        ns = _literal_namespace(e.pattern)
        if ns is None:
            return
        repos = [f"{ns}/-"]  # a name in the namespace: namespace webhooks match
    by_repo = await q.subscribed(conn, repos, "replication")
    if not by_repo:
        return
    per_hook: dict[int, tuple[q.WebhookRow, set[str]]] = {}
    for repo, hooks in by_repo.items():
        for hook in hooks:
            per_hook.setdefault(hook.id, (hook, set()))[1].add(repo)
    finished = e.finished_at or datetime.now(UTC)
    state = e.state if e.state in ("succeeded", "partial", "failed") else "failed"
    for hook, touched in per_hook.values():
        only = next(iter(touched)) if len(touched) == 1 and e.repositories else None
        event = replication_finished_event(
            source(),
            policy=e.policy,
            execution_id=str(e.execution),
            remote=e.remote,
            direction="pull" if e.direction == "pull" else "push",
            status=cast(Literal["succeeded", "partial", "failed"], state),
            tags_succeeded=e.succeeded,
            tags_failed=e.failed,
            bytes_copied=e.bytes,
            started_at=e.started_at or finished,
            finished_at=finished,
            target=Target(repository=only) if only else None,
        )
        await enqueue(conn, hook, [event], only)
