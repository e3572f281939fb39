"""Organizations and teams: members and roles."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from ..auth.scopes import ADMIN
from .pages import (
    PageGroup,
    Visit,
    done_key,
    path_op,
    permission_subject,
    quote_path,
)
from .web import (
    see_other,
)


class OrganizationPages(PageGroup):
    """Organizations and their teams."""

    nav = (("organizations", "/ui/organizations", "Organizations"),)
    done = {
        "org-created": "Organization created.",
        "team-created": "Team created.",
        "member-added": "Member added.",
        "member-removed": "Member removed.",
        "granted": "Permission granted.",
        "revoked": "Permission revoked.",
    }

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/organizations", self.page(self.organizations), methods=get),
            Route("/ui/organizations", self.page(self.create_org), methods=post),
            Route("/ui/organizations/{org}", self.page(self.organization), methods=get),
            Route("/ui/organizations/{org}/teams", self.page(self.create_team), methods=post),
            Route(
                "/ui/organizations/{org}/permissions/{op}",
                self.page(self.org_permission),
                methods=post,
            ),
            Route("/ui/organizations/{org}/teams/{team}", self.page(self.team), methods=get),
            Route(
                "/ui/organizations/{org}/teams/{team}/members/{op}",
                self.page(self.team_member),
                methods=post,
            ),
            Route(
                "/ui/organizations/{org}/teams/{team}/grant",
                self.page(self.team_grant),
                methods=post,
            ),
            Route(
                "/ui/organizations/{org}/teams/{team}/revoke",
                self.page(self.team_revoke),
                methods=post,
            ),
        ]

    # --- organizations and teams ------------------------------------------------------------

    async def organizations(self, visit: Visit) -> Response:
        page = await self._service(self.management.list_organizations(visit.caller, limit=200))
        return self.render(
            visit,
            "organizations.html",
            section="organizations",
            organizations=page.items,
            host=self.host(visit.request),
            form={"name": "", "description": ""},
            error="",
        )

    async def create_org(self, visit: Visit) -> Response:
        f = visit.form
        org = await self._change(
            self.management.create_organization(
                visit.caller, f.get("name", "").strip(), f.get("description", "")
            )
        )
        return see_other(f"/ui/organizations/{quote_path(org.name)}?done=org-created")

    async def _org_admin(self, visit: Visit, org: str) -> bool:
        return ADMIN in await self.access.organization_actions(visit.principal, org)

    async def organization(self, visit: Visit) -> Response:
        name = visit.request.path_params["org"]
        org = await self._service(self.management.organization(visit.caller, name))
        teams = await self._service(self.management.list_teams(visit.caller, name, limit=200))
        can_admin = await self._org_admin(visit, name)
        perms = (
            await self._service(self.management.organization_permissions(visit.caller, name))
            if can_admin
            else []
        )
        return self.render(
            visit,
            "organization.html",
            section="organizations",
            org=org,
            teams=teams.items,
            grants=perms,
            can_admin=can_admin,
            panels=[p for g in self.ui.groups for p in await g.organization_panels(visit, name)],
            error="",
        )

    async def create_team(self, visit: Visit) -> Response:
        org, f = visit.request.path_params["org"], visit.form
        await self._change(
            self.management.create_team(
                visit.caller, org, f.get("name", "").strip(), f.get("description", "")
            )
        )
        return see_other(f"/ui/organizations/{quote_path(org)}?done=team-created")

    async def org_permission(self, visit: Visit) -> Response:
        org, op = visit.request.path_params["org"], path_op(visit, "grant", "revoke")
        user, team = permission_subject(visit.form, org)
        role = visit.form.get("role", "") if op == "grant" else None
        await self._change(
            self.management.set_organization_permission(
                visit.caller, org, role, user=user, team=team
            )
        )
        return see_other(f"/ui/organizations/{quote_path(org)}?done={done_key(op)}")

    async def team(self, visit: Visit) -> Response:
        org, name = visit.request.path_params["org"], visit.request.path_params["team"]
        team = await self._service(self.management.team(visit.caller, org, name))
        org_admin = await self._org_admin(visit, org)
        roles = (
            await self._service(self.management.team_permissions(visit.caller, org, name))
            if org_admin
            else []
        )
        return self.render(
            visit,
            "team.html",
            section="organizations",
            org=org,
            team=team,
            roles=roles,
            org_admin=org_admin,
            can_admin=org_admin and team.source == "local",  # members: not directory teams
            error="",
        )

    async def team_member(self, visit: Visit) -> Response:
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        add = path_op(visit, "add", "remove") == "add"
        user = visit.form.get("username", "").strip()
        await self._change(self.management.set_team_member(visit.caller, org, team, user, add))
        done = "member-added" if add else "member-removed"
        return see_other(
            f"/ui/organizations/{quote_path(org)}/teams/{quote_path(team)}?done={done}"
        )

    async def team_grant(self, visit: Visit) -> Response:
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        repo = visit.form.get("repository", "").strip()
        await self._change(
            self.management.set_repository_permission(
                visit.caller, repo, visit.form.get("role", ""), user=None, team=f"{org}/{team}"
            )
        )
        return see_other(
            f"/ui/organizations/{quote_path(org)}/teams/{quote_path(team)}?done=granted"
        )

    async def team_revoke(self, visit: Visit) -> Response:
        """Revoke one of the team's roles: on its organization, or on a repository (the
        services check the organization's, or the repository's, admin role)."""
        org, team = visit.request.path_params["org"], visit.request.path_params["team"]
        repo = visit.form.get("repository", "").strip()
        if repo:
            call = self.management.set_repository_permission(
                visit.caller, repo, None, user=None, team=f"{org}/{team}"
            )
        else:
            call = self.management.set_organization_permission(
                visit.caller, org, None, user=None, team=f"{org}/{team}"
            )
        await self._change(call)
        return see_other(
            f"/ui/organizations/{quote_path(org)}/teams/{quote_path(team)}?done=revoked"
        )
