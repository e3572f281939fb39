"""/api/v1/vulndb: what vulnerability data is held (any signed-in caller may read it) and, for
system administrators, a refresh of the configured sources queued now."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...api.routing import Call, Op
from ...services.jobs import JobsView
from ...services.models import Model
from .service import VulnDB, VulnDBStatus


class RefreshQueued(Model):
    job_id: int | None = Field(
        description="The queued job (GET /api/v1/jobs/{id}); null when a refresh was already "
        "queued or running"
    )


def ops(vulndb: VulnDB) -> list[Op]:
    async def get_status(c: Call) -> Any:
        return await vulndb.status()

    async def post_refresh(c: Call) -> Any:
        JobsView._admin(c.caller)
        return RefreshQueued(job_id=await vulndb.queue_refresh())

    return [
        Op("GET", "/vulndb", get_status, "The vulnerability database: records per ecosystem, sources imported and when, when the data last changed", "vulnerabilities", "read", response=VulnDBStatus, errors=(401, 403)),
        Op("POST", "/vulndb/refresh", post_refresh, "Queue a refresh of the configured OSV sources now (system administrators)", "vulnerabilities", "write", response=RefreshQueued, status=202, errors=(401, 403)),
    ]  # fmt: skip
