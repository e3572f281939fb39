"""/api/v1/replication: remotes, policies, runs and execution history (system administrators),
and what another Moorage site calls for geo-replication (its site id, identity snapshots)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..api.routing import APIError, Auth, Call, Op
from ..services.models import Page
from .admin import ReplicationAdmin
from .models_api import (
    CheckResult,
    Execution,
    Policy,
    PolicyCreate,
    PolicyUpdate,
    Remote,
    RemoteCreate,
    RunResult,
)


class ExecutionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, description="Executions older than this id.")


class SiteInfo(BaseModel):
    site_id: str


class IdentitySnapshot(BaseModel):
    site_id: str
    version: str
    entries: dict[str, dict[str, Any]]


class IdentityChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: str = Field(description="The version of this site's snapshot the changes apply to.")
    site: str = Field(description="The sending site's id.")
    changes: dict[str, dict[str, Any] | None]


class IdentityApplied(BaseModel):
    version: str
    failed: list[str]


def _id(raw: str, what: str) -> int:
    if not raw.isdecimal() or len(raw) > 18:
        raise APIError(404, "NOT_FOUND", f"no such {what}")
    return int(raw)


def api_ops(admin: ReplicationAdmin) -> list[Op]:
    R: Auth = "read"
    RW: Auth = "write"
    w = (400, 401, 403, 404, 409, 422)
    remote = "/replication/remotes/{remote}"
    policy = "/replication/policies/{policy}"

    async def list_remotes(c: Call) -> Any:
        return Page[Remote](items=await admin.remotes(c.caller), next_cursor=None)

    async def add_remote(c: Call) -> Any:
        return await admin.add_remote(c.caller, c.body)

    async def delete_remote(c: Call) -> Any:
        await admin.delete_remote(c.caller, c.path["remote"])

    async def check_remote(c: Call) -> Any:
        return await admin.check_remote(c.caller, c.path["remote"])

    async def list_policies(c: Call) -> Any:
        return Page[Policy](items=await admin.policies(c.caller), next_cursor=None)

    async def add_policy(c: Call) -> Any:
        return await admin.add_policy(c.caller, c.body)

    async def get_replication_policy(c: Call) -> Any:
        return await admin.policy(c.caller, c.path["policy"])

    async def update_policy(c: Call) -> Any:
        return await admin.update_policy(c.caller, c.path["policy"], c.body)

    async def delete_replication_policy(c: Call) -> Any:
        await admin.delete_policy(c.caller, c.path["policy"])

    async def run(c: Call) -> Any:
        return await admin.run(c.caller, c.path["policy"])

    async def executions(c: Call) -> Any:
        items = await admin.executions(c.caller, c.path["policy"], c.query.limit, c.query.before)
        nxt = str(items[-1].id) if len(items) == c.query.limit else None
        return Page[Execution](items=items, next_cursor=nxt)

    async def execution(c: Call) -> Any:
        return await admin.execution(c.caller, _id(c.path["execution"], "execution"))

    async def site(c: Call) -> Any:
        return SiteInfo(**await admin.site(c.caller))

    async def identities(c: Call) -> Any:
        return IdentitySnapshot(**await admin.identities_snapshot(c.caller))

    async def apply_identities(c: Call) -> Any:
        return IdentityApplied(**await admin.identities_apply(c.caller, c.body.model_dump()))

    t = "replication"
    return [
        Op("GET", "/replication/remotes", list_remotes, "Remote registries (administrators)", t, R, response=Page[Remote], errors=(401, 403)),
        Op("POST", "/replication/remotes", add_remote, "Register a remote registry; its password is stored encrypted", t, RW, body=RemoteCreate, response=Remote, status=201, errors=w),
        Op("DELETE", remote, delete_remote, "Remove a remote no policy uses", t, RW, status=204, errors=w),
        Op("POST", remote + "/check", check_remote, "Check the connection: GET /v2/ with the stored credentials", t, RW, response=CheckResult, errors=w),
        Op("GET", "/replication/policies", list_policies, "Replication policies", t, R, response=Page[Policy], errors=(401, 403)),
        Op("POST", "/replication/policies", add_policy, "Create a push or pull policy", t, RW, body=PolicyCreate, response=Policy, status=201, errors=w),
        Op("GET", policy, get_replication_policy, "A replication policy", t, R, response=Policy),
        Op("PATCH", policy, update_policy, "Enable or disable a policy, change its triggers or bandwidth limit", t, RW, body=PolicyUpdate, response=Policy, errors=w),
        Op("DELETE", policy, delete_replication_policy, "Delete a policy and its execution history", t, RW, status=204, errors=w),
        Op("POST", policy + "/run", run, "Run a policy now: an execution with one job per tag", t, RW, response=RunResult, status=202, errors=w),
        Op("GET", policy + "/executions", executions, "Executions of a policy, newest first", t, R, query=ExecutionQuery, response=Page[Execution]),
        Op("GET", "/replication/executions/{execution}", execution, "An execution with the status, bytes, duration and error of each tag", t, R, response=Execution),
        Op("GET", "/replication/site", site, "This site's id (geo-replication)", t, R, response=SiteInfo, errors=(401, 403)),
        Op("GET", "/replication/identities", identities, "This site's users, organizations, teams, permissions and robots as a snapshot (geo-replication peers)", t, R, response=IdentitySnapshot, errors=(401, 403)),
        Op("PUT", "/replication/identities", apply_identities, "Apply a peer site's identity changes, if this site's snapshot is still the version given (else 409)", t, RW, body=IdentityChanges, response=IdentityApplied, errors=w),
    ]  # fmt: skip
