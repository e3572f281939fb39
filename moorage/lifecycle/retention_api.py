"""/api/v1 for retention policies: read, set, clear and run (or preview) the policy of an
organization, a user's namespace or a repository.

Who: a system administrator, or an administrator of the target — the organization's admins
(for the organization and its repositories), a repository's admins (for that repository), a
user for their own namespace. Retention removes nothing such a caller could not delete through
/v2 themselves, and never an immutable tag."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from ..api.routing import Call, Op
from ..auth.scopes import ADMIN
from ..services.errors import Denied, Missing
from ..services.models import Model
from . import retention as ret


class PolicyIn(Model):
    rules: list[str] = Field(
        min_length=1,
        max_length=16,
        description="Rule strings: keep-last=N, keep-pulled-within=30d, keep-tags=v*,release-*, "
        "untagged-after=7d.",
    )


class PolicyOut(Model):
    scope: str
    target: str
    rules: list[str]
    updated_by: str | None
    updated_at: datetime
    last_run_at: datetime | None
    last_run_tags: int | None
    last_run_manifests: int | None


class Policies(Model):
    items: list[PolicyOut]


class RunIn(Model):
    dry_run: bool = False


class RemovalOut(Model):
    repository: str
    tag: str | None = Field(description="The tag removed; null for an untagged manifest.")
    digest: str
    reason: str


class SkippedOut(Model):
    repository: str
    tag: str | None
    digest: str
    why: str


class RunOut(Model):
    scope: str
    target: str
    dry_run: bool
    rules: list[str]
    repositories: int
    removed: list[RemovalOut] = Field(description="Removed, or with dry_run what would be.")
    skipped: list[SkippedOut]
    kept: int
    spared_immutable: int


def policy_out(s: ret.StoredPolicy) -> PolicyOut:
    return PolicyOut(
        scope=s.scope,
        target=s.target,
        rules=s.policy.rules(),
        updated_by=s.updated_by,
        updated_at=s.updated_at,
        last_run_at=s.last_run_at,
        last_run_tags=s.last_run_tags,
        last_run_manifests=s.last_run_manifests,
    )


def run_out(r: ret.RunReport) -> RunOut:
    return RunOut(
        scope=r.plan.scope,
        target=r.plan.target,
        dry_run=r.dry_run,
        rules=r.plan.rules,
        repositories=len(r.plan.repositories),
        removed=[
            RemovalOut(repository=x.repository, tag=x.tag, digest=x.digest, reason=x.reason)
            for x in r.removed
        ],
        skipped=[
            SkippedOut(repository=x.repository, tag=x.tag, digest=x.digest, why=why)
            for x, why in r.skipped
        ],
        kept=r.plan.kept,
        spared_immutable=r.plan.spared_immutable,
    )


async def may_manage(access: Any, principal: Any, scope: str, target: str) -> bool:
    """System admins; a namespace's admins (and its owner user); a repository's admins."""
    if getattr(principal, "kind", "") == "user" and getattr(principal, "is_admin", False):
        return True
    if access is None or getattr(principal, "anonymous", True):
        return False
    if scope == "repository":
        return ADMIN in await access.allowed_actions(principal, target)
    if principal.kind == "user" and principal.name == target and principal.token_scopes is None:
        return principal.pat_scopes is None or "api:write" in principal.pat_scopes
    return ADMIN in await access.organization_actions(principal, target)


def ops(rt: Any) -> list[Op]:
    service: ret.Retention = rt.services[ret.SERVICE]

    async def target_of(c: Call) -> tuple[str, str]:
        scope, target = ret.parse_target(c.path["target"])
        if not await may_manage(rt.access, c.principal, scope, target):
            raise Denied(f"only an administrator of {target} may manage its retention policy")
        return scope, target

    def actor(c: Call) -> str:
        return str(getattr(c.principal, "name", "") or "api")

    async def list_retention_policies(c: Call) -> Any:
        if not (getattr(c.principal, "is_admin", False) and c.principal.kind == "user"):
            raise Denied("only a system administrator may list every retention policy")
        return Policies(items=[policy_out(s) for s in await service.policies()])

    async def get_retention_policy(c: Call) -> Any:
        scope, target = await target_of(c)
        stored = await service.policy(scope, target)
        if stored is None:
            raise Missing(f"no retention policy on {scope} {target}")
        return policy_out(stored)

    async def put_retention_policy(c: Call) -> Any:
        scope, target = await target_of(c)
        b: PolicyIn = c.body
        return policy_out(await service.set(scope, target, ret.parse_rules(b.rules), actor(c)))

    async def delete_retention_policy(c: Call) -> Any:
        scope, target = await target_of(c)
        if not await service.clear(scope, target, actor(c)):
            raise Missing(f"no retention policy on {scope} {target}")
        return None

    async def run_retention_policy(c: Call) -> Any:
        scope, target = await target_of(c)
        b: RunIn = c.body
        report = await service.run(scope, target, dry_run=b.dry_run, trigger="api", actor=actor(c))
        return run_out(report)

    one = "/retention-policies/{target}"
    slash = frozenset({"target"})
    return [
        Op("GET", "/retention-policies", list_retention_policies, "Every retention policy (system administrators)", "lifecycle", "read", response=Policies, errors=(401, 403)),
        Op("GET", one, get_retention_policy, "The retention policy of an organization, user namespace or repository", "lifecycle", "read", response=PolicyOut, slash_params=slash),
        Op("PUT", one, put_retention_policy, "Set (replace) a retention policy", "lifecycle", "write", body=PolicyIn, response=PolicyOut, slash_params=slash, errors=(400, 401, 403, 422)),
        Op("DELETE", one, delete_retention_policy, "Remove a retention policy", "lifecycle", "write", status=204, slash_params=slash),
        Op("POST", one + "/-/runs", run_retention_policy, "Apply a retention policy now (dry_run: list exactly what would be removed)", "lifecycle", "write", body=RunIn, response=RunOut, slash_params=slash, errors=(400, 401, 403, 404, 422)),
    ]  # fmt: skip
