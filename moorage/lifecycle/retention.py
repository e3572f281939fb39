"""Retention policies: which tags (and untagged manifests) of an organization's, a user's or
one repository's images are removed, on a schedule or on demand (docs/lifecycle.md).

Rules (one syntax for the CLI, the API and the UI; each at most once in a policy):

- ``keep-last=N``: keep the N most recently pushed tags of each repository (a tag's push time is
  when it was last pointed at a manifest).
- ``keep-pulled-within=DURATION``: keep the tags whose manifest was pulled within DURATION.
- ``keep-tags=PATTERN[,PATTERN...]``: keep the tags matching a glob (``v*``, ``release-*``).
- ``untagged-after=DURATION``: remove untagged manifests untouched for DURATION (untouched: not
  pushed, untagged or pulled since).

DURATION is a whole number of days, hours or minutes: ``30d``, ``12h``, ``90m``.

Precedence, in this order:

1. One policy per repository: a repository's own policy *replaces* its namespace's policy (the
   two are not combined), so what a repository keeps can be read off one policy.
2. Immutable tags (moorage/lifecycle/immutable.py) are never removed by retention, whatever the
   rules say (the immutability rule also refuses the registry's own deletes).
3. A tag is kept if *any* keep rule keeps it; with at least one keep rule, every other tag is
   removed. A policy without keep rules removes no tags (only ``untagged-after`` acts).
   ``keep-last`` ranks every tag, immutable ones included.
4. ``untagged-after`` only looks at manifests untagged before the run: one whose last tag the
   run removes becomes untagged now (and stays restorable from the tag's history until GC's
   untagged delay and time-machine window pass). Manifests an index lists, or that refer to a
   manifest still present (signatures, SBOMs), are never untagged roots and are left to GC.

Removing a tag removes the name only; the manifest, once untagged, is garbage-collected like any
other (moorage/lifecycle/gc.py). A run first plans (the dry run returns that plan), then carries
out the plan item by item, each in its own transaction that re-checks it: a tag pushed again
since the plan was made, or a manifest tagged again, is skipped. With nothing changing between
them, a run removes exactly what the dry run listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit import AuditEvent
from ..audit.events import Action
from ..db import queries as q
from ..db.schema import manifest_references, manifests, repositories, tag_history, tags
from ..oci.names import namespace_of
from ..services.context import ServiceContext
from ..services.errors import Invalid, Missing
from ..services.events import ManifestDeleted, TagDeleted
from ..services.rules import PolicyDenied, ReferenceDelete, Requester
from . import immutable
from .gc import aware
from .retention_tables import retention_policies as rp
from .retention_tables import retention_pulls as pulls

RUN_JOB = "retention.run"
SERVICE = "lifecycle.retention"
RULE = re.compile(r"^(keep-last|keep-pulled-within|keep-tags|untagged-after)=(.+)$")
DURATION = re.compile(r"^(\d{1,6})([dhm])$")
UNIT = {"d": 86400, "h": 3600, "m": 60}
MAX_KEEP_LAST = 1_000_000
MAX_PATTERNS = 32
RULE_HELP = (
    "rules are keep-last=N, keep-pulled-within=DURATION, keep-tags=PATTERN[,PATTERN...], "
    "untagged-after=DURATION (DURATION: 30d, 12h, 90m)"
)


# --- rules -------------------------------------------------------------------------------------


def parse_duration(raw: str, rule: str) -> int:
    m = DURATION.match(raw.strip())
    if not m:
        raise Invalid("rules", f"{rule}: {raw[:40]!r} is not a duration like 30d, 12h or 90m")
    return int(m.group(1)) * UNIT[m.group(2)]


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % UNIT[unit] == 0:
            return f"{seconds // UNIT[unit]}{unit}"
    return f"{seconds // 60}m"  # not reached: parsed durations are whole minutes


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_pulled_within: int | None = None  # seconds
    keep_tags: tuple[str, ...] = ()
    untagged_after: int | None = None  # seconds

    @property
    def has_keep_rules(self) -> bool:
        return self.keep_last is not None or self.keep_pulled_within is not None or bool(
            self.keep_tags
        )

    def rules(self) -> list[str]:
        """The canonical rule strings, in a fixed order."""
        out: list[str] = []
        if self.keep_last is not None:
            out.append(f"keep-last={self.keep_last}")
        if self.keep_pulled_within is not None:
            out.append(f"keep-pulled-within={format_duration(self.keep_pulled_within)}")
        if self.keep_tags:
            out.append("keep-tags=" + ",".join(self.keep_tags))
        if self.untagged_after is not None:
            out.append(f"untagged-after={format_duration(self.untagged_after)}")
        return out


def parse_rules(raw: Sequence[str]) -> Policy:
    """Rule strings → a policy. Rules may also be given space-separated in one string."""
    items = [part for r in raw for part in str(r).split()]
    if not items:
        raise Invalid("rules", "a policy needs at least one rule; " + RULE_HELP)
    if len(items) > 16:
        raise Invalid("rules", "at most 16 rules")
    seen: set[str] = set()
    values: dict[str, Any] = {}
    for item in items:
        m = RULE.match(item)
        if not m:
            raise Invalid("rules", f"{item[:60]!r} is not a rule; " + RULE_HELP)
        name, value = m.group(1), m.group(2)
        if name in seen:
            raise Invalid("rules", f"{name} is given twice")
        seen.add(name)
        if name == "keep-last":
            if not value.isdecimal() or not 0 <= int(value) <= MAX_KEEP_LAST:
                raise Invalid("rules", f"keep-last: {value[:20]!r} is not a number 0-1000000")
            values["keep_last"] = int(value)
        elif name == "keep-tags":
            patterns = [p for p in value.split(",") if p]
            if not patterns or len(patterns) > MAX_PATTERNS:
                raise Invalid("rules", f"keep-tags takes 1-{MAX_PATTERNS} patterns")
            try:
                values["keep_tags"] = tuple(
                    dict.fromkeys(immutable.check_pattern(p) for p in patterns)
                )
            except Invalid as exc:
                raise Invalid("rules", f"keep-tags: {exc.message}") from None
        elif name == "keep-pulled-within":
            values["keep_pulled_within"] = parse_duration(value, name)
        else:
            values["untagged_after"] = parse_duration(value, name)
    return Policy(**values)


def parse_target(raw: str) -> tuple[str, str]:
    """ORG-or-REPO → (scope, target), as for immutability rules."""
    return immutable.parse_target(raw)


# --- stored policies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPolicy:
    scope: str
    target: str
    policy: Policy
    updated_by: str | None
    updated_at: datetime
    last_run_at: datetime | None
    last_run_tags: int | None
    last_run_manifests: int | None


def _stored(row: Any) -> StoredPolicy:
    try:
        policy = parse_rules(json.loads(row.rules))
    except (ValueError, Invalid):  # written by a later release: act on nothing
        policy = Policy()
    return StoredPolicy(
        row.scope,
        row.target,
        policy,
        row.updated_by,
        aware(row.updated_at) or datetime.now(UTC),
        aware(row.last_run_at),
        row.last_run_tags,
        row.last_run_manifests,
    )


async def get_policy(conn: AsyncConnection, scope: str, target: str) -> StoredPolicy | None:
    row = (
        await conn.execute(sa.select(rp).where(rp.c.scope == scope, rp.c.target == target))
    ).first()
    return _stored(row) if row is not None else None


async def list_policies(conn: AsyncConnection, namespace: str | None = None) -> list[StoredPolicy]:
    """Every policy, or a namespace's and its repositories'."""
    stmt = sa.select(rp).order_by(rp.c.scope, rp.c.target)
    if namespace is not None:
        stmt = stmt.where(
            sa.or_(
                sa.and_(rp.c.scope == "namespace", rp.c.target == namespace),
                sa.and_(rp.c.scope == "repository", rp.c.target.like(namespace + "/%")),
            )
        )
    return [_stored(r) for r in await conn.execute(stmt)]


async def set_policy(
    conn: AsyncConnection, scope: str, target: str, policy: Policy, by: str
) -> bool:
    """Store *policy*; True when it replaced one."""
    now = datetime.now(UTC)
    values = {"rules": json.dumps(policy.rules()), "updated_by": by, "updated_at": now}
    res = await conn.execute(
        sa.update(rp).where(rp.c.scope == scope, rp.c.target == target).values(**values)
    )
    if res.rowcount:
        return True
    await q.insert_ignore(
        conn, rp, {"scope": scope, "target": target, **values}, ("scope", "target")
    )
    return False


async def clear_policy(conn: AsyncConnection, scope: str, target: str) -> bool:
    res = await conn.execute(sa.delete(rp).where(rp.c.scope == scope, rp.c.target == target))
    return bool(res.rowcount)


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Removal:
    """One thing a run removes: a tag (``tag`` set) or an untagged manifest."""

    repository: str
    tag: str | None
    digest: str
    reason: str = field(compare=False)
    pushed_at: datetime | None = field(default=None, compare=False)

    def label(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"


@dataclass
class Plan:
    scope: str
    target: str
    rules: list[str]
    repositories: list[str]
    removals: list[Removal]
    kept: int = 0  # tags kept
    spared_immutable: int = 0  # tags no keep rule kept, spared as immutable

    @property
    def tags(self) -> list[Removal]:
        return [r for r in self.removals if r.tag is not None]

    @property
    def manifests(self) -> list[Removal]:
        return [r for r in self.removals if r.tag is None]


async def covered_repositories(conn: AsyncConnection, scope: str, target: str) -> list[str]:
    """The repositories a policy acts on: a repository's own; a namespace's, those without a
    policy of their own (precedence 1)."""
    if scope == "repository":
        found = await conn.scalar(sa.select(repositories.c.id).where(repositories.c.name == target))
        return [target] if found is not None else []
    own = sa.select(rp.c.target).where(rp.c.scope == "repository")
    rows = await conn.execute(
        sa.select(repositories.c.name)
        .where(repositories.c.namespace == target, repositories.c.name.not_in(own))
        .order_by(repositories.c.name)
    )
    return list(rows.scalars())


async def _plan_repository(
    conn: AsyncConnection, repo: str, policy: Policy, now: datetime, plan: Plan
) -> None:
    repo_id = await conn.scalar(sa.select(repositories.c.id).where(repositories.c.name == repo))
    if repo_id is None:
        return
    last_pull = {
        r.digest: aware(r.pulled_at)
        for r in await conn.execute(
            sa.select(pulls.c.digest, pulls.c.pulled_at).where(pulls.c.repository_id == repo_id)
        )
    }
    if policy.has_keep_rules:
        rows = (
            await conn.execute(
                sa.select(tags.c.id, tags.c.name, tags.c.updated_at, manifests.c.digest)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                .where(tags.c.repository_id == repo_id)
            )
        ).all()
        ranked = sorted(rows, key=lambda r: (aware(r.updated_at), r.id), reverse=True)
        kept: set[str] = set()
        if policy.keep_last is not None:
            kept.update(r.name for r in ranked[: policy.keep_last])
        if policy.keep_pulled_within is not None:
            since = now - timedelta(seconds=policy.keep_pulled_within)
            for r in rows:
                at = last_pull.get(r.digest)
                if at is not None and at >= since:
                    kept.add(r.name)
        for pattern in policy.keep_tags:
            kept.update(r.name for r in rows if immutable.matches(pattern, r.name))
        locked = await immutable.patterns_for(conn, repo)
        for r in rows:
            if r.name in kept:
                plan.kept += 1
            elif any(immutable.matches(p, r.name) for p in locked):
                plan.spared_immutable += 1
            else:
                plan.removals.append(
                    Removal(repo, r.name, r.digest, "no keep rule keeps it", aware(r.updated_at))
                )
    if policy.untagged_after is not None:
        since = now - timedelta(seconds=policy.untagged_after)
        roots = await untagged_roots(conn, repo_id)
        untagged_at: dict[str, datetime | None] = {}
        if roots:
            untagged_at = {
                r.manifest_digest: aware(r.at)
                for r in await conn.execute(
                    sa.select(
                        tag_history.c.manifest_digest,
                        sa.func.max(tag_history.c.replaced_at).label("at"),
                    )
                    .where(tag_history.c.repository_id == repo_id)
                    .group_by(tag_history.c.manifest_digest)
                )
            }
        for digest, created in roots:
            times = (aware(created), untagged_at.get(digest), last_pull.get(digest))
            touched = max(t for t in times if t is not None)
            if touched <= since:
                plan.removals.append(
                    Removal(repo, None, digest, f"untagged since {touched.isoformat()}", None)
                )


async def untagged_roots(
    conn: AsyncConnection, repo_id: int, digest: str | None = None
) -> list[tuple[str, datetime]]:
    """(digest, pushed at) of the repository's manifests no tag points to, no manifest of the
    repository lists (an index's children) and that refer to no present manifest (only
    *digest*, when given)."""
    m, child, parent = manifests, manifest_references, manifests.alias("parent")
    subject = manifests.alias("subject")
    listed = (
        sa.select(child.c.digest)
        .select_from(child.join(parent, parent.c.id == child.c.manifest_id))
        .where(parent.c.repository_id == repo_id, child.c.kind == "manifest")
    )
    subject_present = (
        sa.select(subject.c.id)
        .where(subject.c.repository_id == repo_id, subject.c.digest == m.c.subject_digest)
        .exists()
    )
    stmt = (
        sa.select(m.c.digest, m.c.created_at)
        .where(
            m.c.repository_id == repo_id,
            ~sa.select(tags.c.id).where(tags.c.manifest_id == m.c.id).exists(),
            m.c.digest.not_in(listed),
            sa.or_(m.c.subject_digest.is_(None), ~subject_present),
        )
        .order_by(m.c.digest)
    )
    if digest is not None:
        stmt = stmt.where(m.c.digest == digest)
    rows = await conn.execute(stmt)
    return [(r.digest, r.created_at) for r in rows]


async def make_plan(
    conn: AsyncConnection, scope: str, target: str, policy: Policy, now: datetime | None = None
) -> Plan:
    now = now or datetime.now(UTC)
    repos = await covered_repositories(conn, scope, target)
    plan = Plan(scope, target, policy.rules(), repos, [])
    for repo in repos:
        await _plan_repository(conn, repo, policy, now, plan)
    plan.removals.sort()
    return plan


# --- pulls -------------------------------------------------------------------------------------


async def pull_sink(conn: AsyncConnection, batch: Sequence[AuditEvent]) -> None:
    """Successful manifest pulls of an audit batch → ``retention_pulls`` (the latest per
    repository and digest; one SELECT and one upsert per pair)."""
    latest: dict[tuple[str, str], datetime] = {}
    for e in batch:
        if e.action != Action.MANIFEST_PULL or e.result != "success":
            continue
        if not e.repository or not e.digest:
            continue
        key = (str(e.repository), str(e.digest))
        at = aware(e.time) or datetime.now(UTC)
        if key not in latest or latest[key] < at:
            latest[key] = at
    if not latest:
        return
    ids = dict(
        (
            await conn.execute(
                sa.select(repositories.c.name, repositories.c.id).where(
                    repositories.c.name.in_({r for r, _ in latest})
                )
            )
        ).all()
    )
    for (repo, digest), at in sorted(latest.items()):
        repo_id = ids.get(repo)
        if repo_id is None:
            continue
        stmt = q._insert(conn, pulls).values(repository_id=repo_id, digest=digest, pulled_at=at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["repository_id", "digest"],
            set_={"pulled_at": stmt.excluded.pulled_at},
            where=pulls.c.pulled_at < stmt.excluded.pulled_at,
        )
        await conn.execute(stmt)


async def prune_pulls(conn: AsyncConnection) -> int:
    """Pull times of manifests deleted since (their repository's deletion cascades)."""
    present = (
        sa.select(manifests.c.id)
        .where(
            manifests.c.repository_id == pulls.c.repository_id,
            manifests.c.digest == pulls.c.digest,
        )
        .exists()
    )
    res = await conn.execute(sa.delete(pulls).where(~present))
    return int(res.rowcount or 0)


# --- running -----------------------------------------------------------------------------------


@dataclass
class RunReport:
    plan: Plan
    dry_run: bool
    removed: list[Removal]
    skipped: list[tuple[Removal, str]]

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.plan.target,
            "scope": self.plan.scope,
            "dry_run": self.dry_run,
            "rules": self.plan.rules,
            "repositories": len(self.plan.repositories),
            "tags": sum(1 for r in self.removed if r.tag is not None),
            "manifests": sum(1 for r in self.removed if r.tag is None),
            "skipped": len(self.skipped),
            "kept": self.plan.kept,
            "spared_immutable": self.plan.spared_immutable,
        }


class Retention:
    """Policies, plans and runs (``rt.services["lifecycle.retention"]``)."""

    def __init__(self, ctx: ServiceContext, audit: Any) -> None:
        self.ctx = ctx
        self.audit = audit

    async def policy(self, scope: str, target: str) -> StoredPolicy | None:
        async with self.ctx.engine.connect() as conn:
            return await get_policy(conn, scope, target)

    async def policies(self, namespace: str | None = None) -> list[StoredPolicy]:
        async with self.ctx.engine.connect() as conn:
            return await list_policies(conn, namespace)

    async def set(self, scope: str, target: str, policy: Policy, actor: str) -> StoredPolicy:
        async with self.ctx.write_engine.begin() as conn:
            replaced = await set_policy(conn, scope, target, policy, actor)
            stored = await get_policy(conn, scope, target)
        assert stored is not None
        await self.audit.record_now(
            AuditEvent(
                "retention.set",
                actor=actor,
                actor_type="user" if not actor.startswith(("cli:", "system")) else "system",
                repository=target if scope == "repository" else None,
                details={"scope": scope, "target": target, "rules": policy.rules(),
                         "replaced": replaced},
            )
        )
        return stored

    async def clear(self, scope: str, target: str, actor: str) -> bool:
        async with self.ctx.write_engine.begin() as conn:
            gone = await clear_policy(conn, scope, target)
        if gone:
            await self.audit.record_now(
                AuditEvent(
                    "retention.clear",
                    actor=actor,
                    actor_type="user" if not actor.startswith(("cli:", "system")) else "system",
                    repository=target if scope == "repository" else None,
                    details={"scope": scope, "target": target},
                )
            )
        return gone

    async def plan(self, scope: str, target: str) -> Plan:
        async with self.ctx.engine.connect() as conn:
            stored = await get_policy(conn, scope, target)
            if stored is None:
                raise Missing(f"no retention policy on {scope} {target}")
            return await make_plan(conn, scope, target, stored.policy)

    async def run(
        self,
        scope: str,
        target: str,
        *,
        dry_run: bool = False,
        trigger: str = "job",
        actor: str = "system",
    ) -> RunReport:
        plan = await self.plan(scope, target)
        if dry_run:
            report = RunReport(plan, True, list(plan.removals), [])
        else:
            report = RunReport(plan, False, [], [])
            who = Requester.system(f"retention:{target}")
            for item in plan.removals:
                why = await self._remove(item, who)
                if why is None:
                    report.removed.append(item)
                    await self.audit.record(
                        AuditEvent(
                            "retention.delete",
                            actor=actor,
                            actor_type="user" if trigger in ("api", "ui") else "system",
                            repository=item.repository,
                            tag=item.tag,
                            digest=item.digest,
                            details={"policy": f"{scope}:{target}", "reason": item.reason,
                                     "what": "tag" if item.tag else "manifest",
                                     "trigger": trigger},
                        )
                    )
                else:
                    report.skipped.append((item, why))
            async with self.ctx.write_engine.begin() as conn:
                await conn.execute(
                    sa.update(rp)
                    .where(rp.c.scope == scope, rp.c.target == target)
                    .values(
                        last_run_at=datetime.now(UTC),
                        last_run_tags=len([r for r in report.removed if r.tag is not None]),
                        last_run_manifests=len([r for r in report.removed if r.tag is None]),
                    )
                )
        if trigger != "job" or report.removed or report.skipped:
            await self.audit.record_now(
                AuditEvent(
                    "retention.dry_run" if dry_run else "retention.run",
                    actor=actor,
                    actor_type="user" if trigger in ("api", "ui") else "system",
                    repository=target if scope == "repository" else None,
                    details={**report.summary(), "trigger": trigger},
                )
            )
        return report

    async def run_all(self, trigger: str = "job") -> list[RunReport]:
        """Every policy, namespaces first (a scheduled run); then forget the pull times of
        manifests no longer there."""
        out = []
        for stored in sorted(await self.policies(), key=lambda s: (s.scope != "namespace", s.target)):
            if stored.policy.rules():
                out.append(await self.run(stored.scope, stored.target, trigger=trigger))
        async with self.ctx.write_engine.begin() as conn:
            await prune_pulls(conn)
        return out

    async def _remove(self, item: Removal, who: Requester) -> str | None:
        """Carry out one planned removal in its own transaction, re-checked there; None when
        done, else why it was skipped."""
        events, rules = self.ctx.events, self.ctx.rules
        async with self.ctx.write_engine.begin() as conn:
            repo_id = await q.repository_id(conn, item.repository)
            if repo_id is None:
                return "repository gone"
            if item.tag is not None:
                row = (
                    await conn.execute(
                        sa.select(tags.c.updated_at, manifests.c.digest)
                        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                        .where(tags.c.repository_id == repo_id, tags.c.name == item.tag)
                        .with_for_update(of=tags)
                    )
                ).first()
                if row is None:
                    return "tag gone"
                if row.digest != item.digest or aware(row.updated_at) != item.pushed_at:
                    return "tag pushed again since the plan"
            else:
                mid = await conn.scalar(
                    sa.select(manifests.c.id).where(
                        manifests.c.repository_id == repo_id, manifests.c.digest == item.digest
                    )
                )
                if mid is None:
                    return "manifest gone"
                if not await untagged_roots(conn, repo_id, item.digest):
                    return "manifest tagged or listed again since the plan"
            try:
                await rules.reference_delete(
                    conn, ReferenceDelete(item.repository, repo_id, item.tag, item.digest, who)
                )
            except PolicyDenied as exc:
                return f"refused: {exc}"
            if item.tag is not None:
                digest = await q.delete_tag(conn, repo_id, item.tag)
                if digest is None:
                    return "tag gone"
                if events.wants(TagDeleted):
                    await events.publish(conn, TagDeleted(item.repository, item.tag, digest, who.name))
            else:
                gone = await q.delete_manifest(conn, repo_id, item.digest)
                if gone is None:
                    return "manifest gone"
                if events.wants(ManifestDeleted):
                    await events.publish(
                        conn, ManifestDeleted(item.repository, item.digest, tuple(gone), who.name)
                    )
        return None


def namespace_of_target(scope: str, target: str) -> str:
    return target if scope == "namespace" else namespace_of(target)


def setup(rt: Any) -> Retention:
    """Called from the capability's setup: the service, the pull clock (an audit sink) and the
    ``retention.run`` job, scheduled every ``retention.interval_seconds`` when enabled. A job
    with a ``target`` payload (``acme`` or ``acme/app``) applies that policy only."""
    service = Retention(rt.ctx, rt.audit)
    rt.services[SERVICE] = service
    rt.audit.add_sink(pull_sink)

    async def job(payload: dict[str, Any]) -> dict[str, Any]:
        target = payload.get("target")
        if isinstance(target, str):
            scope, name = parse_target(target)
            report = await service.run(
                scope,
                name,
                dry_run=bool(payload.get("dry_run", False)),
                trigger=str(payload.get("trigger", "job")),
                actor=str(payload.get("actor", "system")),
            )
            return report.summary()
        reports = await service.run_all()
        return {
            "policies": len(reports),
            "tags": sum(r.summary()["tags"] for r in reports),
            "manifests": sum(r.summary()["manifests"] for r in reports),
        }

    rt.jobs.register(RUN_JOB, job)
    cfg = rt.config.retention
    if cfg.enabled:
        rt.jobs.schedule(RUN_JOB, timedelta(seconds=cfg.interval_seconds))
    return service
