"""Robot accounts."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from ..services.errors import Denied, Invalid, Missing
from ..services.models import Page, Robot
from .pages import (
    PageError,
    PageGroup,
    Visit,
)
from .web import (
    see_other,
)


class RobotPages(PageGroup):
    """Robot accounts: list, create (secret shown once), revoke."""

    nav = (("robots", "/ui/robots", "Robots"),)
    done = {"robot-revoked": "Robot revoked."}

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/robots", self.page(self.robots), methods=get),
            Route("/ui/robots", self.page(self.create_robot), methods=post),
            Route("/ui/robots/{robot}/revoke", self.page(self.revoke_robot), methods=post),
        ]

    # --- robots -----------------------------------------------------------------------------

    async def _robot_namespaces(self, visit: Visit) -> list[str]:
        """Namespaces whose robots the caller may see: their own and their organizations'."""
        orgs = await self._service(self.management.list_organizations(visit.caller, limit=200))
        return [visit.principal.name, *(o.name for o in orgs.items)]

    async def robots(self, visit: Visit) -> Response:
        extra: dict[str, Any] = {"admin_view": False}
        review = visit.request.query_params.get("review", "").strip()[:64]
        if visit.is_admin and review:
            # After an account's recovery: the robots it created or that live in its namespace.
            page = await self._service(self.management.robots_to_review(visit.caller, review))
            robots = page.items
            extra = {"admin_view": True, "review": review, "filters": {"namespace": ""}}
        elif visit.is_admin:
            robots, extra = await self._all_robots(visit)
        else:
            robots = []
            for ns in await self._robot_namespaces(visit):
                try:
                    page = await self.management.list_robots(visit.caller, ns, limit=200)
                except (Denied, Invalid, Missing):
                    continue  # an organization the caller belongs to but does not administer
                robots.extend(page.items)
        return self.render(
            visit,
            "robots.html",
            section="robots",
            robots=robots,
            form=dict.fromkeys(("namespace", "name", "description", "access", "expires_days"), ""),
            error="",
            **extra,
        )

    async def _all_robots(self, visit: Visit) -> tuple[list[Robot], dict[str, Any]]:
        """System administrators: every namespace's robots, filtered by namespace, paged."""
        qp = visit.request.query_params
        filters = {"namespace": qp.get("namespace", "").strip()[:64]}
        cursor = qp.get("after") or None
        try:
            page = await self.management.all_robots(
                visit.caller, filters["namespace"] or None, cursor, limit=100
            )
            error = ""
        except Invalid as exc:
            page, error = Page[Robot](items=[], next_cursor=None), str(exc)
        view = {
            "admin_view": True,
            "filters": filters,
            "next_after": page.next_cursor,
            "first_page": cursor is None,
            "filter_error": error,
        }
        return page.items, view

    async def create_robot(self, visit: Visit) -> Response:
        f = visit.form
        namespace = f.get("namespace", "").strip()
        days = f.get("expires_days", "").strip()
        if days and not days.isdecimal():
            raise PageError(400, "Not saved", "Expiry is a whole number of days.")
        robot = await self._change(
            self.management.create_robot(
                visit.caller,
                namespace,
                f.get("name", "").strip(),
                _robot_access(namespace, f.get("access", "")),
                description=f.get("description", ""),
                expires_in_days=int(days) if days else None,
            )
        )
        # The secret is on this page only: no redirect to a page that could show it again.
        return self.render(
            visit,
            "secret.html",
            section="robots",
            title=f"Robot {robot.name} created",
            lost="revoke the robot and create another",
            username=robot.name,
            secret=robot.secret,
            back="/ui/robots",
            host=self.host(visit.request),
        )

    async def revoke_robot(self, visit: Visit) -> Response:
        namespace, _, name = visit.request.path_params["robot"].partition("+")
        await self._change(self.management.revoke_robot(visit.caller, namespace, name))
        return see_other("/ui/robots?done=robot-revoked")


def _robot_access(namespace: str, text: str) -> list[dict[str, Any]]:
    """``TARGET=ACTIONS`` lines (as ``moorage admin create-robot --access``) to the service's
    access list; the service validates every entry."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        target, sep, actions = line.partition("=")
        if not sep:
            raise PageError(400, "Not saved", f"Access line {line[:100]!r} is not TARGET=ACTIONS.")
        target = target.strip()
        key = "organization" if "/" not in target else "repository"
        acts = [a.strip() for a in actions.split(",") if a.strip()]
        out.append({key: target, "actions": acts})
    if not out:
        raise PageError(400, "Not saved", "Give the robot access to at least one repository.")
    return out
