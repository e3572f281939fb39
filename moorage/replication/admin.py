"""Replication through the REST API and the UI: who may (system administrators) and the audit
record of each change, over :class:`~moorage.replication.service.ReplicationService`."""

from __future__ import annotations

from typing import Any

from ..services.management import AdminService, Caller
from .identities import IdentitySync, check_changes
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
from .service import ReplicationService


class ReplicationAdmin(AdminService):
    service: ReplicationService
    identities: IdentitySync

    def bind(self, service: ReplicationService, identities: IdentitySync) -> ReplicationAdmin:
        self.service = service
        self.identities = identities
        return self

    # --- remotes --------------------------------------------------------------------------

    async def remotes(self, c: Caller) -> list[Remote]:
        self._sysadmin_read(c)
        return await self.service.remotes()

    async def add_remote(self, c: Caller, spec: RemoteCreate) -> Remote:
        self._sysadmin(c)
        remote = await self.service.add_remote(spec)
        await self._audit(
            c,
            "replication.remote.create",
            details={"remote": remote.name, "url": remote.url, "site": remote.site},
        )
        return remote

    async def delete_remote(self, c: Caller, name: str) -> None:
        self._sysadmin(c)
        await self.service.delete_remote(name)
        await self._audit(c, "replication.remote.delete", details={"remote": name})

    async def check_remote(self, c: Caller, name: str) -> CheckResult:
        self._sysadmin(c)
        return await self.service.check_remote(name)

    # --- policies -------------------------------------------------------------------------

    async def policies(self, c: Caller) -> list[Policy]:
        self._sysadmin_read(c)
        return await self.service.policies()

    async def policy(self, c: Caller, name: str) -> Policy:
        self._sysadmin_read(c)
        from .service import policy_model

        return policy_model(await self.service.policy(name))

    async def add_policy(self, c: Caller, spec: PolicyCreate) -> Policy:
        self._sysadmin(c)
        policy = await self.service.add_policy(spec, c.principal.name)
        await self._audit(
            c, "replication.policy.create", details=policy.model_dump(mode="json")
        )
        return policy

    async def update_policy(self, c: Caller, name: str, body: PolicyUpdate) -> Policy:
        self._sysadmin(c)
        policy = await self.service.update_policy(
            name,
            enabled=body.enabled,
            triggers=body.triggers,
            bandwidth_limit=body.bandwidth_limit,
            description=body.description,
        )
        await self._audit(
            c,
            "replication.policy.update",
            details={"policy": name, **body.model_dump(mode="json", exclude_none=True)},
        )
        return policy

    async def delete_policy(self, c: Caller, name: str) -> None:
        self._sysadmin(c)
        await self.service.delete_policy(name)
        await self._audit(c, "replication.policy.delete", details={"policy": name})

    # --- executions -----------------------------------------------------------------------

    async def run(self, c: Caller, name: str) -> RunResult:
        self._sysadmin(c)
        execution = await self.service.start(name, "manual", c.principal.name)
        await self._audit(
            c, "replication.run", details={"policy": name, "execution": execution}
        )
        return RunResult(execution=execution, policy=name)

    async def executions(
        self, c: Caller, name: str, limit: int = 50, before: int | None = None
    ) -> list[Execution]:
        self._sysadmin_read(c)
        return await self.service.executions(name, limit, before)

    async def execution(self, c: Caller, execution_id: int) -> Execution:
        self._sysadmin_read(c)
        return await self.service.execution(execution_id)

    # --- geo-replication: what a peer site calls ------------------------------------------

    async def site(self, c: Caller) -> dict[str, Any]:
        self._sysadmin_read(c)
        return {"site_id": await self.service.site_id()}

    async def identities_snapshot(self, c: Caller) -> dict[str, Any]:
        self._sysadmin_read(c)
        version, entries = await self.identities.local()
        return {"site_id": await self.service.site_id(), "version": version, "entries": entries}

    async def identities_apply(self, c: Caller, body: dict[str, Any]) -> dict[str, Any]:
        self._sysadmin(c)
        from ..services.errors import Invalid

        expect = body.get("expect")
        site = body.get("site")
        if not isinstance(expect, str) or not isinstance(site, str) or len(site) > 64:
            raise Invalid("expect", "expect (the version read) and site are strings")
        return await self.identities.receive(expect, check_changes(body.get("changes")), site)
