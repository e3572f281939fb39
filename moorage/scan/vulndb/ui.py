"""The vulnerability-data page (what is imported, from where, when, and the pull policies the
visitor manages) and the pull-policy pages: an organization's or repository's policy, viewed
and edited by its admins (block severity, fixable only, block unscanned, the allow-list with
expiry and reason), through the same checks and service calls as the REST API
(moorage/scan/vulndb/api.py). The organization page shows its policy with an edit link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from ...hooks.service import parse_target
from ...services.errors import Invalid
from ...ui.pages import PageError, PageGroup, Panel, Visit, denied, not_found, quote_path
from ...ui.web import see_other
from .policy import BLOCK_LEVELS
from .service import AllowModel, PolicyBody, PolicyModel, VulnDB

HERE = Path(__file__).parent
MAX_ROWS = 1000  # allow-list entries one form may carry (the API's bound)
NEW_ROWS = 3  # blank rows offered for new entries


def policy_link(target: str) -> str:
    return f"/ui/vulnerability-policies/{quote_path(target)}"


def raw_rows(form: dict[str, str]) -> list[Any]:
    """The allow-list rows as sent (unchecked), to show the form again after an error."""
    out = []
    for n in range(MAX_ROWS + NEW_ROWS):
        ident = form.get(f"allow_id_{n}", "").strip()
        if ident and not (f"allow_existing_{n}" in form and not form.get(f"allow_keep_{n}")):
            out.append(
                AllowModel.model_construct(
                    id=ident[:128],
                    expires=form.get(f"allow_expires_{n}", "").strip()[:40] or None,
                    reason=form.get(f"allow_reason_{n}", "").strip()[:500],
                )
            )
    return out


def allow_rows(form: dict[str, str]) -> list[AllowModel]:
    """The allow-list entries of the edit form: rows ``allow_id_N``, ``allow_expires_N``,
    ``allow_reason_N``; an existing row is kept while its ``allow_keep_N`` box is ticked (new
    rows have no box), a row without an id is skipped."""
    rows: list[AllowModel] = []
    for n in range(MAX_ROWS + NEW_ROWS):
        if f"allow_id_{n}" not in form:
            continue
        ident = form.get(f"allow_id_{n}", "").strip()
        if not ident or (f"allow_existing_{n}" in form and not form.get(f"allow_keep_{n}")):
            continue
        expires = form.get(f"allow_expires_{n}", "").strip() or None
        reason = form.get(f"allow_reason_{n}", "").strip()
        if len(ident) > 128 or len(reason) > 500:
            raise Invalid("allow", "an allow-list id is at most 128 characters, a reason 500")
        rows.append(AllowModel(id=ident, expires=expires, reason=reason))
    if len(rows) > MAX_ROWS:
        raise Invalid("allow", f"at most {MAX_ROWS} allow-list entries")
    return rows


class VulnDBPages(PageGroup):
    nav = (("vulndb", "/ui/vulndb", "Vulnerability data"),)
    template_dir = HERE / "templates"
    done = {
        "policy-saved": "Vulnerability policy saved: pulls follow it within seconds.",
        "policy-removed": "Vulnerability policy removed.",
    }

    def __init__(self, ui: object, vulndb: VulnDB) -> None:
        super().__init__(ui)  # type: ignore[arg-type]
        self.vulndb = vulndb

    def routes(self) -> list[Route]:
        one = "/ui/vulnerability-policies/{target:path}"
        return [
            Route("/ui/vulndb", self.page(self.status_page), methods=["GET", "HEAD"]),
            Route("/ui/vulnerability-policies", self.page(self.goto), methods=["POST"]),
            Route(one + "/delete", self.page(self.delete), methods=["POST"]),
            Route(one, self.page(self.policy_page), methods=["GET", "HEAD"]),
            Route(one, self.page(self.save), methods=["POST"]),
        ]

    async def status_page(self, visit: Visit) -> Response:
        status = await self.vulndb.status()
        p = visit.principal
        is_admin = p.kind == "user" and p.is_admin
        policies = await self.vulndb.policies(p) if p.kind == "user" else []
        return self.render(
            visit,
            "vulndb.html",
            section="vulndb",
            db=status,
            policies=policies,
            admin=is_admin,
            manager=p.kind == "user",
        )

    # --- the organization page's section ---------------------------------------------------

    async def org_panels(self, visit: Visit, organization: str) -> list[Panel]:
        if not await self.vulndb.may_manage(visit.principal, organization, write=False):
            return []
        mine = [
            p
            for p in await self.vulndb.policies(visit.principal)
            if p.target == organization or p.target.startswith(organization + "/")
        ]
        return [
            Panel(
                "Vulnerability policy",
                "vuln_policy_panel.html",
                {"org": organization, "policies": mine, "link": policy_link},
            )
        ]

    # --- one policy ------------------------------------------------------------------------

    async def _target(self, visit: Visit, write: bool) -> str:
        try:
            _, target = parse_target(str(visit.request.path_params["target"]))
        except Invalid:
            raise not_found() from None
        if visit.principal.kind == "anonymous":
            raise denied("Sign in to manage vulnerability policies.")
        if not await self.vulndb.may_manage(visit.principal, target, write):
            raise denied(
                f"Managing the vulnerability policy of {target} needs the admin role on it."
            )
        return target

    def _form_page(
        self, visit: Visit, target: str, policy: PolicyModel | None, error: str = "",
        status: int = 200, shown: PolicyModel | None = None,
    ) -> Response:  # fmt: skip
        return self.render(
            visit,
            "vuln_policy.html",
            status,
            section="vulndb",
            target=target,
            policy=policy,
            shown=shown or policy,
            levels=BLOCK_LEVELS,
            new_rows=NEW_ROWS,
            action=policy_link(target),
            error=error,
        )

    async def policy_page(self, visit: Visit) -> Response:
        target = await self._target(visit, write=False)
        return self._form_page(visit, target, await self.vulndb.policy(target))

    async def save(self, visit: Visit) -> Response:
        target = await self._target(visit, write=True)
        f = visit.form
        current = await self.vulndb.policy(target)
        try:
            allow = allow_rows(f)
            body = PolicyBody(
                block_severity=f.get("block_severity", ""),
                fixable_only=bool(f.get("fixable_only")),
                block_unscanned=bool(f.get("block_unscanned")),
                allow=allow,
            )
            saved = await self.vulndb.set_policy(target, body, visit.principal.name)
        except (Invalid, ValueError) as exc:
            # the form again, as sent, with what to fix
            message = getattr(exc, "message", None) or str(exc)
            if not isinstance(exc, Invalid):
                message = "some allow-list entry is malformed: " + str(exc).splitlines()[0]
            scope = "repository" if "/" in target else "namespace"
            shown = PolicyModel(
                scope=scope,
                target=target,
                block_severity=f.get("block_severity", "none")[:16],
                fixable_only=bool(f.get("fixable_only")),
                block_unscanned=bool(f.get("block_unscanned")),
                allow=raw_rows(f),
            )
            return self._form_page(visit, target, current, str(message), 400, shown=shown)
        await self.vulndb.record(
            visit.caller, "vulnerability.policy.set", **saved.model_dump(mode="json")
        )
        return see_other(policy_link(target) + "?done=policy-saved")

    async def delete(self, visit: Visit) -> Response:
        target = await self._target(visit, write=True)
        if not await self.vulndb.delete_policy(target):
            raise PageError(404, "Not found", f"{target} has no vulnerability policy.")
        await self.vulndb.record(visit.caller, "vulnerability.policy.remove", target=target)
        return see_other(policy_link(target) + "?done=policy-removed")

    async def goto(self, visit: Visit) -> Response:
        """The vulnerability-data page's "open the policy of" form."""
        raw = visit.form.get("target", "").strip()
        try:
            _, target = parse_target(raw)
        except Invalid as exc:
            raise PageError(400, "Not found", str(exc)) from None
        return see_other(policy_link(target))
