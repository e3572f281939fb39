"""/api/v1/vulndb: what vulnerability data is held (any signed-in caller may read it) and, for
system administrators, a refresh of the configured sources queued now."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...api.routing import Call, Op
from ...services.errors import NotFound
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

    async def list_vulnerability_policies(c: Call) -> Any:
        JobsView._admin(c.caller)
        return PolicyList(items=await vulndb.policies())

    async def set_vulnerability_policy(c: Call) -> Any:
        JobsView._admin(c.caller)
        return await vulndb.set_policy(c.path["target"], c.body, c.principal.name)

    async def delete_vulnerability_policy(c: Call) -> Any:
        JobsView._admin(c.caller)
        if not await vulndb.delete_policy(c.path["target"]):
            raise NotFound(f"no vulnerability policy for {c.path['target'][:255]}")

    vp = "/vulnerability-policies/{target}"
    return [
        Op("GET", "/vulnerability-policies", list_vulnerability_policies, "Vulnerability policies of every organization and repository (system administrators)", "vulnerabilities", "read", response=PolicyList, errors=(401, 403)),
        Op("PUT", vp, set_vulnerability_policy, "Set an organization's or repository's vulnerability policy: block pulls at or above a severity, fixable only, unscanned, allow-list with expiry (system administrators)", "vulnerabilities", "write", body=PolicyBody, response=PolicyModel, errors=(400, 401, 403, 422), slash_params=frozenset({"target"})),
        Op("DELETE", vp, delete_vulnerability_policy, "Remove an organization's or repository's vulnerability policy (system administrators)", "vulnerabilities", "write", status=204, errors=(401, 403, 404), slash_params=frozenset({"target"})),
        Op("GET", "/vulndb", vulndb_status, "The vulnerability database: records per ecosystem, sources imported and when, when the data last changed", "vulnerabilities", "read", response=VulnDBStatus, errors=(401, 403)),
        Op("POST", "/vulndb/refresh", refresh_vulndb, "Queue a refresh of the configured OSV sources now (system administrators)", "vulnerabilities", "write", response=RefreshQueued, status=202, errors=(401, 403)),
    ]  # fmt: skip
