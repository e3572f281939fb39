"""/api/v1 for lifecycle: a GC pass, tag immutability rules, a tag's history and its restore.

GC and immutability rules are for system administrators only in this release (organization
admins manage immutability through their system administrator; finer delegation is a later
step); a tag's history is for those who may pull the repository, a restore for those who may
push to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from ..api.routing import Call, Op
from ..auth.scopes import PULL, PUSH
from ..services.errors import Denied, Missing, NameUnknown
from ..services.manifests import ManifestService
from ..services.models import Model
from ..services.rules import Requester
from . import history as hist
from . import immutable


class GCRunRequest(Model):
    dry_run: bool = False
    grace: float | None = Field(None, ge=0, le=10 * 365 * 86400, description="Seconds.")


class GCRunResult(Model):
    dry_run: bool
    manifests: list[str]
    blobs: list[str]
    bytes: int
    deferred: int


class ImmutableRuleIn(Model):
    target: str = Field(max_length=255, description="An organization or user, or org/repo.")
    pattern: str = Field(max_length=128, description="A glob over tag names, e.g. v*.")


class ImmutableRuleOut(Model):
    scope: str
    target: str
    pattern: str
    created_by: str | None
    created_at: datetime


class ImmutableRules(Model):
    items: list[ImmutableRuleOut]


class HistoryItem(Model):
    digest: str
    replaced_at: datetime | None
    restorable: bool


class TagHistory(Model):
    items: list[HistoryItem]


class RestoreRequest(Model):
    digest: str = Field(max_length=200)


def _admin(c: Call) -> None:
    if not getattr(c.principal, "is_admin", False):
        raise Denied("only a system administrator may do this")


def ops(rt: Any, service: Any) -> list[Op]:
    async def _may(c: Call, repo: str, action: str) -> None:
        """A tag's history for those who may pull the repository, a restore for those who may
        push to it (as in the web UI; an immutable tag moves for a system administrator only)."""
        if getattr(c.principal, "kind", "") == "user" and getattr(c.principal, "is_admin", False):
            return
        actions = await rt.access.allowed_actions(c.principal, repo) if rt.access else frozenset()
        if PULL not in actions:
            raise NameUnknown(f"repository {repo} is not known")
        if action not in actions:
            raise Denied(f"{action} rights on {repo} are needed")

    async def gc_run(c: Call) -> Any:
        _admin(c)
        b: GCRunRequest = c.body
        name = getattr(c.principal, "name", "admin")
        r = await service.gc(dry_run=b.dry_run, grace=b.grace, trigger="api", actor=name)
        return GCRunResult(
            dry_run=r.dry_run,
            manifests=[f"{repo}@{d}" for repo, d in r.manifests],
            blobs=[d for d, _ in r.blobs],
            bytes=r.bytes,
            deferred=r.deferred,
        )

    async def rules(c: Call) -> Any:
        _admin(c)
        async with rt.ctx.engine.connect() as conn:
            found = await immutable.list_rules(conn)
        return ImmutableRules(
            items=[
            ImmutableRuleOut(
                scope=r.scope,
                target=r.target,
                pattern=r.pattern,
                created_by=r.created_by,
                created_at=r.created_at
                if r.created_at.tzinfo is not None
                else r.created_at.replace(tzinfo=UTC),
            )
            for r in found
            ]
        )

    async def add_rule(c: Call) -> Any:
        _admin(c)
        b: ImmutableRuleIn = c.body
        scope, target = immutable.parse_target(b.target)
        pattern = immutable.check_pattern(b.pattern)
        async with rt.ctx.write_engine.begin() as conn:
            await immutable.add(conn, scope, target, pattern, str(getattr(c.principal, "name", "")))
        return None

    async def remove_rule(c: Call) -> Any:
        _admin(c)
        b: ImmutableRuleIn = c.body
        scope, target = immutable.parse_target(b.target)
        pattern = immutable.check_pattern(b.pattern)
        async with rt.ctx.write_engine.begin() as conn:
            if not await immutable.remove(conn, scope, target, pattern):
                raise Missing(f"no immutability rule {pattern!r} on {scope} {target}")
        return None

    async def tag_history(c: Call) -> Any:
        repo, tag = c.path["repository"], c.path["tag"]
        await _may(c, repo, PULL)  # what the caller could pull anyway
        async with rt.ctx.engine.connect() as conn:
            entries = await hist.history(conn, repo, tag, rt.config.gc.history_days)
        return TagHistory(
            items=[
                HistoryItem(digest=e.digest, replaced_at=e.replaced_at, restorable=e.restorable)
                for e in entries
            ]
        )

    async def restore(c: Call) -> Any:
        b: RestoreRequest = c.body
        repo, tag = hist.parse_reference(f"{c.path['repository']}:{c.path['tag']}")
        await _may(c, repo, PUSH)  # a push of a manifest already in the repository
        p = c.principal

        async def may(action: str) -> bool:
            return action in await rt.access.allowed_actions(p, repo)

        admin = p.kind == "user" and bool(p.is_admin)
        who = Requester(getattr(p, "name", "admin"), p.kind, admin, may)
        await hist.restore(ManifestService(rt.ctx), repo, tag, b.digest, who)
        return None

    tag_path = "/repositories/{repository}/-/tags/{tag}"
    return [
        Op("POST", "/gc/runs", gc_run, "Run one garbage-collection pass now (dry_run: report only)", "lifecycle", "write", body=GCRunRequest, response=GCRunResult, errors=(400, 401, 403, 422)),
        Op("GET", "/immutable-tags", rules, "Tag immutability rules", "lifecycle", "read", response=ImmutableRules, errors=(401, 403)),
        Op("POST", "/immutable-tags", add_rule, "Add a tag immutability rule (organization, user or repository; glob pattern)", "lifecycle", "write", body=ImmutableRuleIn, status=204, errors=(400, 401, 403, 422)),
        Op("POST", "/immutable-tags/remove", remove_rule, "Remove a tag immutability rule", "lifecycle", "write", body=ImmutableRuleIn, status=204, errors=(400, 401, 403, 404, 422)),
        Op("GET", tag_path + "/history", tag_history, "What a tag pointed to (time machine), current first", "lifecycle", "read", response=TagHistory),
        Op("POST", tag_path + "/restore", restore, "Point a tag at a manifest from its history again", "lifecycle", "write", body=RestoreRequest, status=204, errors=(400, 401, 403, 404, 422)),
    ]  # fmt: skip
