"""/api/v1/vulndb: what vulnerability data is held (any signed-in caller may read it) and, for
system administrators, a refresh of the configured sources queued now."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...api.routing import Call, Op
from ...hooks.service import parse_target
from ...services.errors import Denied, NotFound
from ...services.jobs import JobsView
from ...services.models import Model
from .service import PolicyBody, PolicyList, PolicyModel, VulnDB, VulnDBStatus


class RefreshQueued(Model):
    job_id: int | None = Field(
        description="The queued job (GET /api/v1/jobs/{id}); null when a refresh was already "
        "queued or running"
    )


def ops(vulndb: VulnDB) -> list[Op]:
    async def vulndb_status(c: Call) -> Any:
        return await vulndb.status()

    async def refresh_vulndb(c: Call) -> Any:
        JobsView._admin(c.caller)
        return RefreshQueued(job_id=await vulndb.queue_refresh())

    async def manage(c: Call, write: bool) -> str:
        """The target after the check that the caller may manage its policy."""
        _, target = parse_target(c.path["target"])
        if not await vulndb.may_manage(c.principal, target, write):
            raise Denied(
                f"managing the vulnerability policy of {target} needs the admin role on it"
                if c.principal.kind == "user"
                else "vulnerability policies are managed by people, not robots or tokens"
            )
        return target

    async def list_vulnerability_policies(c: Call) -> Any:
        p = c.principal
        if p.kind != "user" or p.token_scopes is not None:
            raise Denied("vulnerability policies are managed by people, not robots or tokens")
        return PolicyList(items=await vulndb.policies(p))

    async def get_vulnerability_policy(c: Call) -> Any:
        target = await manage(c, write=False)
        got = await vulndb.policy(target)
        if got is None:
            raise NotFound(f"no vulnerability policy for {target}")
        return got

    async def set_vulnerability_policy(c: Call) -> Any:
        target = await manage(c, write=True)
        saved = await vulndb.set_policy(target, c.body, c.principal.name)
        await vulndb.record(c.caller, "vulnerability.policy.set", **saved.model_dump(mode="json"))
        return saved

    async def delete_vulnerability_policy(c: Call) -> Any:
        target = await manage(c, write=True)
        if not await vulndb.delete_policy(target):
            raise NotFound(f"no vulnerability policy for {target}")
        await vulndb.record(c.caller, "vulnerability.policy.remove", target=target)

    vp = "/vulnerability-policies/{target}"
    return [
        Op("GET", "/vulnerability-policies", list_vulnerability_policies, "Vulnerability policies the caller manages (system administrators: all; others: those of the organizations and repositories they hold the admin role on)", "vulnerabilities", "read", response=PolicyList, errors=(401, 403)),
        Op("GET", vp, get_vulnerability_policy, "An organization's or repository's vulnerability policy (its admins)", "vulnerabilities", "read", response=PolicyModel, errors=(400, 401, 403, 404, 422), slash_params=frozenset({"target"})),
        Op("PUT", vp, set_vulnerability_policy, "Set an organization's or repository's vulnerability policy: block pulls at or above a severity, fixable only, unscanned, allow-list with expiry (its admins)", "vulnerabilities", "write", body=PolicyBody, response=PolicyModel, errors=(400, 401, 403, 422), slash_params=frozenset({"target"})),
        Op("DELETE", vp, delete_vulnerability_policy, "Remove an organization's or repository's vulnerability policy (its admins)", "vulnerabilities", "write", status=204, errors=(401, 403, 404), slash_params=frozenset({"target"})),
        Op("GET", "/vulndb", vulndb_status, "The vulnerability database: records per ecosystem, sources imported and when, when the data last changed", "vulnerabilities", "read", response=VulnDBStatus, errors=(401, 403)),
        Op("POST", "/vulndb/refresh", refresh_vulndb, "Queue a refresh of the configured OSV sources now (system administrators)", "vulnerabilities", "write", response=RefreshQueued, status=202, errors=(401, 403)),
    ]  # fmt: skip
