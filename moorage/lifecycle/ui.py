"""Web pages of lifecycle: a page per organization (or user namespace) with its retention
policies (view, edit, clear, a dry-run preview listing exactly what a run would remove, a run),
its tag immutability rules (list; add and remove for system administrators, as in the API) and a
tag's history with restore (the time machine).

The same checks as the REST API: retention for the target's administrators
(moorage/lifecycle/retention_api.py ``may_manage``); a tag's history for those who may pull the
repository, a restore for those who may push to it (it is a push of a manifest already in the
repository, under the content rules: an immutable tag stays as it is unless a system
administrator restores it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.responses import Response
from starlette.routing import Route

from ..auth.scopes import ADMIN, PULL, PUSH
from ..oci.names import valid_name, valid_tag
from ..services.errors import Invalid, NotFound
from ..services.manifests import ManifestService
from ..services.rules import Requester
from ..ui.pages import PageError, PageGroup, Visit, denied, not_found, quote_path
from ..ui.web import see_other
from . import history as hist
from . import immutable
from . import retention as ret
from .retention_api import may_manage

if TYPE_CHECKING:
    from ..ui.app import WebUI


class LifecyclePages(PageGroup):
    nav = (("lifecycle", "/ui/lifecycle", "Lifecycle"),)
    done = {
        "retention-set": "Retention policy saved.",
        "retention-cleared": "Retention policy removed.",
        "immutable-added": "Immutability rule added.",
        "immutable-removed": "Immutability rule removed.",
        "tag-restored": "Tag restored.",
    }
    template_dir: ClassVar[Path | None] = Path(__file__).parent / "templates"

    def __init__(self, ui: WebUI, rt: Any) -> None:
        super().__init__(ui)
        self.rt = rt
        self.retention: ret.Retention = rt.services[ret.SERVICE]

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        base = "/ui/lifecycle/{ns}"
        hist_path = "/ui/repositories/{name:path}/-/history/{tag}"
        return [
            Route("/ui/lifecycle", self.page(self.index), methods=get),
            Route(base, self.page(self.namespace), methods=get),
            Route(base + "/retention", self.page(self.set_policy), methods=post),
            Route(base + "/retention/clear", self.page(self.clear_policy), methods=post),
            Route(base + "/retention/preview", self.page(self.preview), methods=post),
            Route(base + "/retention/run", self.page(self.run), methods=post),
            Route(base + "/immutable/{op}", self.page(self.immutable_rule), methods=post),
            Route(base + "/history", self.page(self.find_history), methods=get),
            Route(hist_path + "/restore", self.page(self.restore), methods=post),
            Route(hist_path, self.page(self.tag_history), methods=get),
        ]

    # --- helpers ---------------------------------------------------------------------------

    def _ns(self, visit: Visit) -> str:
        ns = str(visit.request.path_params["ns"])
        if "/" in ns or not valid_name(ns):
            raise not_found()
        return ns

    def _target(self, visit: Visit, ns: str) -> tuple[str, str]:
        """The form's target: the namespace itself or one of its repositories."""
        raw = visit.form.get("target", "").strip() or ns
        try:
            scope, target = ret.parse_target(raw)
        except Invalid as exc:
            raise PageError(400, "Not saved", exc.message) from None
        if target != ns and not target.startswith(ns + "/"):
            raise PageError(400, "Not saved", f"{target} is not in {ns}.")
        return scope, target

    async def _may_manage(self, visit: Visit, scope: str, target: str) -> bool:
        return await may_manage(self.access, visit.principal, scope, target)

    async def _require(self, visit: Visit, scope: str, target: str) -> None:
        if not await self._may_manage(visit, scope, target):
            raise denied(f"Only an administrator of {target} may manage its retention policy.")

    async def _may_view(self, visit: Visit, ns: str) -> bool:
        if visit.is_admin or visit.principal.name == ns:
            return True
        return bool(await self.access.organization_actions(visit.principal, ns))

    def _url(self, ns: str, done: str = "") -> str:
        return f"/ui/lifecycle/{quote_path(ns)}" + (f"?done={done}" if done else "")

    # --- pages -----------------------------------------------------------------------------

    async def index(self, visit: Visit) -> Response:
        page = await self._service(self.management.list_organizations(visit.caller, limit=200))
        names = [o.name for o in page.items]
        return self.render(
            visit,
            "lifecycle_index.html",
            section="lifecycle",
            namespaces=names,
            own=visit.principal.name,
        )

    async def namespace(
        self, visit: Visit, preview: ret.RunReport | None = None, status: int = 200
    ) -> Response:
        ns = self._ns(visit)
        if not await self._may_view(visit, ns):
            raise denied(f"You have no role in {ns}.")
        policies = await self.retention.policies(ns)
        async with self.ctx.engine.connect() as conn:
            rules = [
                r
                for r in await immutable.list_rules(conn)
                if r.target == ns or r.target.startswith(ns + "/")
            ]
        own = next((p for p in policies if p.scope == "namespace"), None)
        return self.render(
            visit,
            "lifecycle.html",
            status,
            section="lifecycle",
            ns=ns,
            policy=own,
            repo_policies=[p for p in policies if p.scope == "repository"],
            can_manage=await self._may_manage(visit, "namespace", ns),
            immutable_rules=rules,
            can_immutable=visit.is_admin,
            report=preview,
            rule_help=ret.RULE_HELP,
            history_days=self.ctx.config.gc.history_days,
        )

    async def set_policy(self, visit: Visit) -> Response:
        ns = self._ns(visit)
        scope, target = self._target(visit, ns)
        await self._require(visit, scope, target)
        rules = visit.form.get("rules", "")[:2000].split()
        try:
            policy = ret.parse_rules(rules)
        except Invalid as exc:
            raise PageError(400, "Not saved", exc.message) from None
        await self.retention.set(scope, target, policy, visit.principal.name)
        return see_other(self._url(ns, "retention-set"))

    async def clear_policy(self, visit: Visit) -> Response:
        ns = self._ns(visit)
        scope, target = self._target(visit, ns)
        await self._require(visit, scope, target)
        if not await self.retention.clear(scope, target, visit.principal.name):
            raise not_found(f"No retention policy on {target}.")
        return see_other(self._url(ns, "retention-cleared"))

    async def _run(self, visit: Visit, dry_run: bool) -> Response:
        ns = self._ns(visit)
        scope, target = self._target(visit, ns)
        await self._require(visit, scope, target)
        report = await self._service(
            self.retention.run(
                scope, target, dry_run=dry_run, trigger="ui", actor=visit.principal.name
            )
        )
        return await self.namespace(visit, report)

    async def preview(self, visit: Visit) -> Response:
        return await self._run(visit, True)

    async def run(self, visit: Visit) -> Response:
        return await self._run(visit, False)

    async def immutable_rule(self, visit: Visit) -> Response:
        ns = self._ns(visit)
        op = str(visit.request.path_params["op"])
        if op not in ("add", "remove"):
            raise not_found()
        if not visit.is_admin:
            raise denied("Immutability rules are managed by system administrators.")
        scope, target = self._target(visit, ns)
        try:
            pattern = immutable.check_pattern(visit.form.get("pattern", "").strip())
        except Invalid as exc:
            raise PageError(400, "Not saved", exc.message) from None
        async with self.ctx.write_engine.begin() as conn:
            if op == "add":
                changed = await immutable.add(conn, scope, target, pattern, visit.principal.name)
            else:
                changed = await immutable.remove(conn, scope, target, pattern)
        if not changed:
            what = "is already there" if op == "add" else "does not exist"
            raise PageError(409 if op == "add" else 404, "Not saved", f"The rule {what}.")
        from ..audit import AuditEvent

        await self.rt.audit.record_now(
            AuditEvent(
                f"tag.immutable_{op}",
                actor=visit.principal.name,
                actor_type="user",
                details={"scope": scope, "target": target, "pattern": pattern},
            )
        )
        return see_other(self._url(ns, "immutable-added" if op == "add" else "immutable-removed"))

    async def find_history(self, visit: Visit) -> Response:
        """The lifecycle page's "tag history" form: REPOSITORY and TAG → the history page."""
        ns = self._ns(visit)
        repo = visit.request.query_params.get("repository", "").strip()
        tag = visit.request.query_params.get("tag", "").strip()
        if "/" not in repo:
            repo = f"{ns}/{repo}"
        if not valid_name(repo) or not valid_tag(tag):
            raise PageError(400, "Not found", "Give a repository and a tag.")
        return see_other(f"/ui/repositories/{quote_path(repo)}/-/history/{tag}")

    async def _repo_tag(self, visit: Visit, action: str) -> tuple[str, str]:
        name = str(visit.request.path_params["name"])
        tag = str(visit.request.path_params["tag"])
        if not valid_name(name) or not valid_tag(tag):
            raise not_found()
        actions = await self.access.allowed_actions(visit.principal, name)
        if PULL not in actions:
            raise not_found(f"repository {name} is not known")
        if action not in actions:
            raise denied(f"Restoring a tag of {name} needs push rights.")
        return name, tag

    async def tag_history(self, visit: Visit) -> Response:
        name, tag = await self._repo_tag(visit, PULL)
        try:
            async with self.ctx.engine.connect() as conn:
                entries = await hist.history(conn, name, tag, self.ctx.config.gc.history_days)
        except NotFound as exc:
            raise not_found(exc.message) from None
        actions = await self.access.allowed_actions(visit.principal, name)
        return self.render(
            visit,
            "lifecycle_history.html",
            section="lifecycle",
            repo=name,
            tag=tag,
            entries=entries,
            can_restore=PUSH in actions,
            can_admin=ADMIN in actions,
            history_days=self.ctx.config.gc.history_days,
            action=f"/ui/repositories/{quote_path(name)}/-/history/{tag}/restore",
        )

    async def restore(self, visit: Visit) -> Response:
        name, tag = await self._repo_tag(visit, PUSH)
        digest = visit.form.get("digest", "").strip()[:200]
        p = visit.principal
        access = self.access

        async def may(action: str) -> bool:
            return action in await access.allowed_actions(p, name)

        who = Requester(p.name, "user", bool(p.is_admin), may)
        try:
            await self._change(hist.restore(ManifestService(self.ctx), name, tag, digest, who))
        except NotFound as exc:
            raise PageError(404, "Not restored", exc.message) from None
        from ..audit import AuditEvent

        await self.rt.audit.record_now(
            AuditEvent(
                "tag.restore",
                actor=p.name,
                actor_type="user",
                repository=name,
                tag=tag,
                digest=digest,
            )
        )
        return see_other(
            f"/ui/repositories/{quote_path(name)}/-/history/{tag}?done=tag-restored"
        )
