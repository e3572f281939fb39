"""Organizations, their teams, members and organization permissions."""

from __future__ import annotations

from typing import Any

from ...auth import admin
from ...db import access_queries as aq
from ...db import management_queries as mq
from ..catalog import check_limit, decode_cursor, page_of
from ..errors import Conflict, Missing
from ..models import (
    Grant,
    Organization,
    Page,
    Team,
    TeamGrant,
)
from .base import ALL_REGISTRY_SCOPES, AdminService, Caller, _text


class OrganizationAdmin(AdminService):
    # --- organizations ----------------------------------------------------------------------

    async def list_organizations(
        self, c: Caller, cursor: str | None = None, limit: int | None = None
    ) -> Page[Organization]:
        n = check_limit(limit)
        p = c.principal
        async with self.ctx.engine.connect() as conn:
            names: frozenset[str] | None = None
            if not (p.kind == "user" and p.is_admin and p.token_scopes is None):
                names = (
                    await mq.user_org_names(conn, p.id)
                    if p.kind == "user" and p.id is not None
                    else frozenset()
                )
            rows = await mq.list_orgs(conn, names, decode_cursor(cursor), n + 1)
        items, nxt = page_of(rows, [r.name for r in rows], n)
        return Page[Organization](items=[_org(r) for r in items], next_cursor=nxt)

    async def organization(self, c: Caller, org: str) -> Organization:
        await self._org_reader(c, org)  # before existence: outsiders learn no names
        async with self.ctx.engine.connect() as conn:
            await admin.org_id_in(conn, org)
            return _org(await mq.org_full(conn, org))

    async def create_organization(
        self, c: Caller, name: str, description: str = ""
    ) -> Organization:
        self._sysadmin(c)
        description = _text(description, "description")
        async with self._tx() as conn:
            await admin.create_org_in(conn, name, description)
            row = await mq.org_full(conn, name)
        await self._audit(c, "organization.create", details={"organization": name})
        return _org(row)

    async def update_organization(self, c: Caller, org: str, description: str) -> Organization:
        description = _text(description, "description")
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            await mq.update_org(conn, await admin.org_id_in(conn, org), description)
            row = await mq.org_full(conn, org)
        await self._audit(c, "organization.update", details={"organization": org})
        return _org(row)

    async def delete_organization(self, c: Caller, org: str) -> None:
        self._sysadmin(c)
        async with self._tx() as conn:
            org_id = await admin.org_id_in(conn, org)
            if await mq.namespace_has_repositories(conn, org):
                raise Conflict(f"organization {org} still has repositories; delete them first")
            await mq.delete_org(conn, org_id, org)
        await self._audit(c, "organization.delete", details={"organization": org})

    async def organization_permissions(self, c: Caller, org: str) -> list[Grant]:
        await self._existing_org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.organization_permissions(conn, await admin.org_id_in(conn, org))
        return [Grant(**r) for r in rows]

    async def set_organization_permission(
        self, c: Caller, org: str, role: str | None, *, user: str | None, team: str | None
    ) -> None:
        await self._existing_org_admin(c, org)
        await self._set_grant(c, org, role, user=user, team=team, organization=org)

    async def _existing_org_admin(self, c: Caller, org: str) -> None:
        """The admin role on *org*, asked before its existence: to anyone else an existing
        organization and a missing one look the same (403)."""
        await self._org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            await admin.org_id_in(conn, org)

    # --- teams ------------------------------------------------------------------------------

    async def list_teams(
        self, c: Caller, org: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[Team]:
        n = check_limit(limit)
        await self._org_reader(c, org)
        async with self.ctx.engine.connect() as conn:
            org_id = await admin.org_id_in(conn, org)
            rows = await mq.list_teams(conn, org_id, decode_cursor(cursor), n + 1)
            items, nxt = page_of(rows, [r.name for r in rows], n)
            members = await mq.team_members_of(conn, [r.id for r in items])
        return Page[Team](
            items=[_team(org, r, members.get(r.id, [])) for r in items], next_cursor=nxt
        )

    async def team(self, c: Caller, org: str, team: str) -> Team:
        await self._org_reader(c, org)
        async with self.ctx.engine.connect() as conn:
            tid = await admin.team_id_in(conn, org, team)
        return await self._team_model(org, tid)

    async def team_permissions(self, c: Caller, org: str, team: str) -> list[TeamGrant]:
        """The roles *org/team* holds (organization and repository grants): its org's admins,
        as for the organization's own permissions."""
        await self._existing_org_admin(c, org)
        async with self.ctx.engine.connect() as conn:
            rows = await aq.team_permissions(conn, await admin.team_id_in(conn, org, team))
        return [TeamGrant(**r) for r in rows]

    async def _team_model(self, org: str, tid: int) -> Team:
        async with self.ctx.engine.connect() as conn:
            row = await mq.team_row(conn, tid)
            members = await mq.team_members_of(conn, [tid])
        return _team(org, row, members[tid])

    async def create_team(
        self,
        c: Caller,
        org: str,
        name: str,
        description: str = "",
        members: list[str] | None = None,
    ) -> Team:
        await self._existing_org_admin(c, org)
        description = _text(description, "description")
        async with self._tx() as conn:
            tid = await admin.create_team_in(
                conn, org, name, members or [], description=description, exist_ok=False
            )
        await self._audit(
            c, "team.create", details={"team": f"{org}/{name}", "members": members or []}
        )
        return await self._team_model(org, tid)

    async def update_team(self, c: Caller, org: str, team: str, description: str) -> Team:
        description = _text(description, "description")
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            tid = await admin.team_id_in(conn, org, team)
            await mq.update_team(conn, tid, description)
        await self._audit(c, "team.update", details={"team": f"{org}/{team}"})
        return await self._team_model(org, tid)

    async def delete_team(self, c: Caller, org: str, team: str) -> None:
        await self._existing_org_admin(c, org)
        async with self._tx() as conn:
            await mq.delete_team(conn, await admin.team_id_in(conn, org, team))
        await self._audit(c, "team.delete", details={"team": f"{org}/{team}"})

    async def set_team_member(
        self, c: Caller, org: str, team: str, user: str, member: bool
    ) -> None:
        await self._existing_org_admin(c, org)
        self._registry_scopes(c, "change a team's members", *ALL_REGISTRY_SCOPES)
        async with self._tx() as conn:
            tid = await admin.team_id_in(conn, org, team)
            row = await mq.team_row(conn, tid)
            if row.source in ("ldap", "oidc"):
                raise Conflict(
                    "this team's members come from the directory "
                    f"({'LDAP' if row.source == 'ldap' else 'single sign-on groups'})"
                )
            uid = (await admin.user_in(conn, user)).id
            if member:
                await aq.add_team_member(conn, tid, uid)
            elif not await aq.remove_team_member(conn, tid, uid):
                raise Missing(f"{user} is not a member of {org}/{team}")
        action = "team.member.add" if member else "team.member.remove"
        await self._audit(c, action, details={"team": f"{org}/{team}", "user": user})


def _org(r: Any) -> Organization:
    return Organization(
        name=r.name,
        description=r.description or "",
        created_at=mq.aware(r.created_at),
        team_count=int(r.team_count or 0),
        repository_count=int(r.repository_count or 0),
    )


def _team(org: str, r: Any, members: list[str]) -> Team:
    return Team(
        organization=org,
        name=r.name,
        description=r.description or "",
        source=r.source if r.source in ("ldap", "oidc") else "local",
        created_at=mq.aware(r.created_at),
        members=members,
    )
