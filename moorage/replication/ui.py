"""Replication pages (system administrators): remotes with "check connection", policies with
"run now", each policy's executions, and an execution's per-tag outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from starlette.responses import Response
from starlette.routing import Route

from ..ui.pages import PageError, PageGroup, Visit, denied, not_found, quote_path
from ..ui.web import see_other
from .admin import ReplicationAdmin
from .models_api import PolicyCreate, RemoteCreate

if TYPE_CHECKING:
    from ..ui.app import WebUI


class ReplicationPages(PageGroup):
    nav = (("replication", "/ui/replication", "Replication"),)
    admin_sections = frozenset({"replication"})
    done = {
        "remote-added": "Remote registered.",
        "policy-added": "Policy created.",
        "started": "Execution started; its tags run as background jobs.",
    }
    template_dir: ClassVar[Path | None] = Path(__file__).parent / "templates"

    def __init__(self, ui: WebUI, admin: ReplicationAdmin) -> None:
        super().__init__(ui)
        self.admin = admin

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/replication", self.page(self.overview), methods=get),
            Route("/ui/replication/remotes", self.page(self.add_remote), methods=post),
            Route("/ui/replication/remotes/{remote}/check", self.page(self.check), methods=post),
            Route("/ui/replication/policies", self.page(self.add_policy), methods=post),
            Route("/ui/replication/policies/{policy}", self.page(self.policy), methods=get),
            Route("/ui/replication/policies/{policy}/run", self.page(self.run), methods=post),
            Route("/ui/replication/executions/{execution}", self.page(self.execution), methods=get),
        ]

    def _admin_only(self, visit: Visit) -> None:
        if not visit.is_admin:
            raise denied("Replication is for system administrators.")

    async def overview(self, visit: Visit, check: object = None) -> Response:
        self._admin_only(visit)
        remotes = await self._service(self.admin.remotes(visit.caller))
        policies = await self._service(self.admin.policies(visit.caller))
        return self.render(
            visit,
            "replication.html",
            section="replication",
            remotes=remotes,
            policies=policies,
            check=check,
        )

    async def add_remote(self, visit: Visit) -> Response:
        self._admin_only(visit)
        f = visit.form
        spec = RemoteCreate(
            name=f.get("name", "").strip(),
            url=f.get("url", "").strip(),
            username=f.get("username", "").strip() or None,
            password=f.get("password") or None,
            insecure=f.get("insecure") == "on",
            site=f.get("site") == "on",
            description=f.get("description", ""),
        )
        await self._change(self.admin.add_remote(visit.caller, spec))
        return see_other("/ui/replication?done=remote-added")

    async def check(self, visit: Visit) -> Response:
        self._admin_only(visit)
        result = await self._change(
            self.admin.check_remote(visit.caller, visit.request.path_params["remote"])
        )
        return await self.overview(visit, check=result)

    async def add_policy(self, visit: Visit) -> Response:
        self._admin_only(visit)
        f = visit.form
        triggers = [t.strip() for t in f.get("triggers", "manual").split(",") if t.strip()]
        platforms = [p.strip() for p in f.get("platforms", "").split(",") if p.strip()]
        direction = f.get("direction", "")
        if direction not in ("push", "pull"):
            raise PageError(400, "Not saved", "Direction is push or pull.")
        spec = PolicyCreate(
            name=f.get("name", "").strip(),
            remote=f.get("remote", "").strip(),
            direction=direction,
            source=f.get("source", "").strip(),
            tags=f.get("tags", "").strip() or None,
            exclude=f.get("exclude", "").strip() or None,
            dest_namespace=f.get("dest_namespace", "").strip() or None,
            triggers=triggers or ["manual"],
            platforms=platforms or None,
            replicate_deletes=f.get("replicate_deletes") == "on",
        )
        await self._change(self.admin.add_policy(visit.caller, spec))
        return see_other("/ui/replication?done=policy-added")

    async def policy(self, visit: Visit) -> Response:
        self._admin_only(visit)
        name = visit.request.path_params["policy"]
        policy = await self._service(self.admin.policy(visit.caller, name))
        executions = await self._service(self.admin.executions(visit.caller, name, 50))
        return self.render(
            visit,
            "replication_policy.html",
            section="replication",
            policy=policy,
            executions=executions,
        )

    async def run(self, visit: Visit) -> Response:
        self._admin_only(visit)
        name = visit.request.path_params["policy"]
        await self._change(self.admin.run(visit.caller, name))
        return see_other(f"/ui/replication/policies/{quote_path(name)}?done=started")

    async def execution(self, visit: Visit) -> Response:
        self._admin_only(visit)
        raw = visit.request.path_params["execution"]
        if not raw.isdecimal() or len(raw) > 18:
            raise not_found()
        execution = await self._service(self.admin.execution(visit.caller, int(raw)))
        return self.render(
            visit, "replication_execution.html", section="replication", execution=execution
        )
