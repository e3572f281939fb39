"""Web pages of content trust: the configuration of each namespace (keys, keyless identities,
Notation trust stores, the Sigstore trust root, the Notation trust policy, the signed-only
policy), a repository's trust view (verdict per tag, its policy), the signatures of a manifest,
a trust column on the repository page and a Signatures section on the image page.

Everything goes through TrustAdmin, as the REST API and the command line do (same checks,
same audit records).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import Route

from ..ui.pages import Cell, PageGroup, Panel, TagColumn, Visit, not_found, quote_path
from ..ui.web import see_other
from .admin import TrustAdmin
from .service import TrustReport
from .settings import SYSTEM, valid_namespace

if TYPE_CHECKING:
    from ..ui.app import WebUI

BADGE = {"trusted": "ok", "untrusted": "danger", "unsigned": "warn"}
STATUS_BADGE = {"verified": "ok", "untrusted": "warn", "failed": "danger", "pending": ""}


def _lines(text: str) -> list[str]:
    return [x.strip() for x in text.replace(",", " ").split() if x.strip()]


class TrustPages(PageGroup):
    nav = (("trust", "/ui/trust", "Trust"),)
    template_dir = Path(__file__).parent / "templates"
    done = {
        "trust-saved": "Trust configuration saved; signatures are being verified again.",
        "trust-policy": "Pull policy saved.",
        "trust-removed": "Removed.",
        "trust-reverify": "Re-verification queued.",
    }

    def __init__(self, ui: WebUI, admin: TrustAdmin) -> None:
        super().__init__(ui)
        self.admin = admin

    def routes(self) -> list[Route]:
        get, post = ["GET", "HEAD"], ["POST"]
        return [
            Route("/ui/trust", self.page(self.overview), methods=get),
            Route("/ui/trust/ns", self.page(self.open_namespace), methods=get),
            Route("/ui/trust/ns/{namespace}", self.page(self.namespace), methods=get),
            Route("/ui/trust/ns/{namespace}/{op}", self.page(self.change), methods=post),
            Route(
                "/ui/repositories/{name:path}/-/trust/policy",
                self.page(self.repo_policy),
                methods=post,
            ),
            Route(
                "/ui/repositories/{name:path}/-/trust/{digest}",
                self.page(self.manifest, public=True),
                methods=get,
            ),
            Route(
                "/ui/repositories/{name:path}/-/trust",
                self.page(self.repository, public=True),
                methods=get,
            ),
        ]

    # --- hooks into the core pages ------------------------------------------------------------

    async def tag_columns(self, visit: Visit, repository: str, digests: list[str]) -> list[TagColumn]:
        reports = await self.admin.trust.reports_for(repository, digests)
        base = f"/ui/repositories/{quote_path(repository)}/-/trust/"
        cells = {
            d: Cell(r.verdict.status, base + d, BADGE[r.verdict.status], r.verdict.reason)
            for d, r in reports.items()
        }
        return [TagColumn("Trust", cells)]

    async def image_panels(self, visit: Visit, repository: str, digest: str) -> list[Panel]:
        report = await self.admin.trust.report(repository, digest, inline=True, parents=True)
        if report is None:
            return []
        return [Panel("Signatures", "trust_panel.html", self._report_context(repository, report))]

    # --- pages ---------------------------------------------------------------------------------

    async def overview(self, visit: Visit) -> Response:
        names = await self._service(self.admin.namespaces(visit.caller))
        policies = await self._service(self.admin.policies(visit.caller))
        return self.render(
            visit,
            "trust.html",
            section="trust",
            namespaces=names,
            policies=policies,
            can_open=visit.is_admin,
        )

    async def open_namespace(self, visit: Visit) -> Response:
        ns = visit.request.query_params.get("namespace", "").strip()
        if not valid_namespace(ns):
            raise not_found("No such namespace.")
        return see_other(f"/ui/trust/ns/{quote_path(ns)}")

    async def namespace(self, visit: Visit) -> Response:
        ns = visit.request.path_params["namespace"]
        if not valid_namespace(ns):
            raise not_found()
        cfg = await self._service(self.admin.namespace_config(visit.caller, ns))
        policies = {p.target: p for p in await self._service(self.admin.policies(visit.caller))}
        return self.render(
            visit,
            "trust_namespace.html",
            section="trust",
            cfg=cfg,
            ns=ns,
            can_manage=await self.admin.may_manage(visit.caller, ns),
            policy=policies.get(ns),
        )

    async def change(self, visit: Visit) -> Response:
        ns = visit.request.path_params["namespace"]
        op = visit.request.path_params["op"]
        f, c, a = visit.form, visit.caller, self.admin
        done = "trust-saved"
        if op == "add-key":
            await self._change(a.add_key(c, ns, f.get("name", "").strip(), f.get("public_key", "")))
        elif op == "add-keyless":
            await self._change(
                a.add_keyless(
                    c, ns, f.get("name", "").strip(), identity=f.get("identity", "").strip(),
                    issuer=f.get("issuer", "").strip(), identity_regex=bool(f.get("identity_regex")),
                    issuer_regex=bool(f.get("issuer_regex")),
                )  # fmt: skip
            )
        elif op == "add-store":
            await self._change(
                a.add_notation_store(
                    c, ns, f.get("name", "").strip(), [f.get("certificates", "")], f.get("type", "ca")
                )
            )
        elif op == "remove":
            kind = f.get("kind") or None
            await self._change(a.remove_entry(c, ns, f.get("name", ""), kind))
            done = "trust-removed"
        elif op in ("trusted-root", "notation-policy"):
            text = f.get("document", "").strip()
            setter = a.set_trusted_root if op == "trusted-root" else a.set_notation_policy
            await self._change(setter(c, ns, text or None))
        elif op == "policy":
            await self._change(self._set_policy(visit, ns))
            done = "trust-policy"
        elif op == "remove-policy":
            await self._change(a.delete_policy(c, ns))
            done = "trust-removed"
        elif op == "reverify":
            await self._change(a.reverify(c, ns))
            done = "trust-reverify"
        else:
            raise not_found()
        return see_other(f"/ui/trust/ns/{quote_path(ns)}?done={done}")

    async def _set_policy(self, visit: Visit, target: str) -> Any:
        f = visit.form
        return await self.admin.set_policy(
            visit.caller,
            target,
            require_signature=f.get("require_signature") == "on",
            signers=_lines(f.get("signers", "")),
            require_all=f.get("require_all") == "on",
            docker_reference=f.get("docker_reference", "").strip() or None,
        )

    async def repo_policy(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        if visit.form.get("remove"):
            await self._change(self.admin.delete_policy(visit.caller, name))
        else:
            await self._change(self._set_policy(visit, name))
        return see_other(f"/ui/repositories/{quote_path(name)}/-/trust?done=trust-policy")

    async def repository(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        after = visit.request.query_params.get("after") or None
        rows, policy = await self._service(
            self.admin.tag_reports(visit.caller, name, after, 101)
        )
        can_admin = await self.admin.may_manage(visit.caller, name)
        own = policy is not None and policy.target == name
        return self.render(
            visit,
            "trust_repository.html",
            section="repositories",
            repo=name,
            rows=[(t, r, BADGE[r.verdict.status]) for t, r in rows[:100]],
            next_after=rows[99][0] if len(rows) > 100 else None,
            policy=policy,
            own_policy=own,
            can_admin=can_admin,
        )

    async def manifest(self, visit: Visit) -> Response:
        name = visit.request.path_params["name"]
        digest = visit.request.path_params["digest"]
        report = await self._service(self.admin.report(visit.caller, name, digest))
        return self.render(
            visit,
            "trust_manifest.html",
            section="repositories",
            repo=name,
            panel=self._report_context(name, report),
        )

    def _report_context(self, repository: str, report: TrustReport) -> dict[str, Any]:
        return {
            "repo": repository,
            "report": report,
            "badge": BADGE[report.verdict.status],
            "status_badge": STATUS_BADGE,
            "system": SYSTEM,
        }
