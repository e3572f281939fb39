"""The capability plug-in points (moorage/capability.py), exercised by a small capability of the
test's own, in-process: its setup builds a service and registers a job, an event subscriber
writes a row in the push's own transaction, its content rule refuses writes, reads and deletes,
its API operation joins the route table and the OpenAPI document, its page joins the UI with a
navigation entry, and its command joins ``moorage``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response
from starlette.routing import Route

from moorage.api.routing import Call, Op
from moorage.app import Moorage
from moorage.capability import Capability
from moorage.cli import build_parser
from moorage.config import load_config
from moorage.db import job_queries
from moorage.db.schema import jobs
from moorage.runtime import Runtime
from moorage.services.events import ManifestPushed, TagDeleted
from moorage.services.rules import (
    ManifestRead,
    ManifestWrite,
    PolicyDenied,
    ReferenceDelete,
    Rule,
)
from moorage.ui.pages import PageGroup, Visit

PASSWORD = "capability-test-password"


class Frozen(Rule):
    """Refuses to write tag ``frozen``, to read tag ``secret`` and to delete tag ``keep``."""

    name = "frozen"
    order = 30

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        if "frozen" in write.tags:
            raise PolicyDenied("tag frozen is immutable (policy frozen)", policy=self.name)

    async def manifest_read(self, read: ManifestRead) -> None:
        if read.reference == "secret" and not await read.requester.may("delete"):
            raise PolicyDenied("tag secret is withheld (policy frozen)", policy=self.name)

    async def reference_delete(self, conn: AsyncConnection, delete: ReferenceDelete) -> None:
        if delete.tag == "keep":
            raise PolicyDenied("tag keep cannot be deleted (policy frozen)", policy=self.name)


class ToyPages(PageGroup):
    nav = (("toy", "/ui/toy", "Toy"),)

    def routes(self) -> list[Route]:
        return [Route("/ui/toy", self.page(self.toy), methods=["GET"])]

    async def toy(self, visit: Visit) -> Response:
        return Response(f"toy page for {visit.principal.name}", media_type="text/plain")


async def _setup(rt: Runtime) -> None:
    rt.services["toy"] = {"started": True}
    rt.ctx.rules.add(Frozen())

    async def on_push(conn: AsyncConnection, event: ManifestPushed) -> None:
        await job_queries.enqueue(
            conn, "toy.scan", {"digest": event.digest, "tags": list(event.tags)}
        )

    async def on_tag_deleted(conn: AsyncConnection, event: TagDeleted) -> None:
        await job_queries.enqueue(conn, "toy.forget", {"tag": event.tag, "digest": event.digest})

    rt.ctx.events.on(ManifestPushed, on_push)
    rt.ctx.events.on(TagDeleted, on_tag_deleted)

    async def scan(payload: dict[str, Any]) -> dict[str, Any]:
        return {"scanned": payload["digest"]}

    rt.jobs.register("toy.scan", scan)


def _api_ops(rt: Runtime) -> list[Op]:
    async def hello(c: Call) -> Any:
        return Response(
            json.dumps({"hello": c.principal.name, **rt.services["toy"]}),
            media_type="application/json",
        )

    return [Op("GET", "/toy/hello", hello, "Say hello", "toy", "read", response=None)]


def _cli(tree: Any) -> None:
    p = tree.top.add_parser("toy", help="the toy capability")
    p.set_defaults(func=lambda args: 0)


TOY = Capability(
    "toy",
    setup=_setup,
    job_kinds=("toy.scan",),
    api_ops=_api_ops,
    ui_pages=lambda rt, ui: ToyPages(ui),
    cli=_cli,
)


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Moorage]:
    from moorage.auth.bootstrap import bootstrap
    from moorage.db.engine import upgrade

    monkeypatch.setenv("MOORAGE_ADMIN_PASSWORD", PASSWORD)
    config = load_config(None, overrides={"data_dir": str(tmp_path), "jobs.enabled": False})
    await upgrade(config.database_url)
    await bootstrap(config)
    monkeypatch.setattr("moorage.runtime.installed", lambda: (TOY,))
    moorage = Moorage(config)
    await moorage.startup()
    try:
        yield moorage
    finally:
        await moorage.shutdown()


def _client(app: Moorage) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://testserver",
        auth=("admin", PASSWORD),
    )


async def _push(c: httpx.AsyncClient, repo: str, tag: str) -> httpx.Response:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    r = await c.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", content=config)
    assert r.status_code == 201, r.text
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": len(config),
        },
        "layers": [],
    }
    return await c.put(
        f"/v2/{repo}/manifests/{tag}",
        content=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )


async def _jobs(app: Moorage, kind: str) -> list[dict[str, Any]]:
    assert app.ctx is not None
    async with app.ctx.engine.connect() as conn:
        rows = await conn.execute(sa.select(jobs.c.payload).where(jobs.c.kind == kind))
        return [dict(r.payload) for r in rows]


async def test_events_are_written_in_the_push_transaction(app: Moorage) -> None:
    async with _client(app) as c:
        r = await _push(c, "acme/app", "v1")
        assert r.status_code == 201, r.text
        digest = r.headers["docker-content-digest"]
        assert await _jobs(app, "toy.scan") == [{"digest": digest, "tags": ["v1"]}]
        # Refused by the rule: the push rolls back, and so does its event's job row.
        r = await _push(c, "acme/app", "frozen")
        assert r.status_code == 403
        assert r.json()["errors"][0] == {
            "code": "DENIED",
            "message": "tag frozen is immutable (policy frozen)",
        }
        assert (await c.get("/v2/acme/app/manifests/frozen")).status_code == 404
        assert len(await _jobs(app, "toy.scan")) == 1
        assert (await c.delete("/v2/acme/app/manifests/v1")).status_code == 202
        assert await _jobs(app, "toy.forget") == [{"tag": "v1", "digest": digest}]


async def test_rules_refuse_reads_and_deletes_with_their_message(app: Moorage) -> None:
    async with _client(app) as c:
        assert (await _push(c, "acme/app", "keep")).status_code == 201
        assert (await _push(c, "acme/app", "secret")).status_code == 201
        r = await c.delete("/v2/acme/app/manifests/keep")
        assert r.status_code == 403 and "cannot be deleted" in r.text
        # The REST API goes through the same rule (and says so with its own error shape).
        r = await c.delete("/api/v1/repositories/acme/app/-/tags/keep")
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == "tag keep cannot be deleted (policy frozen)"
        # The admin may delete, so the read rule lets them read; a robot with pull only may not.
        assert (await c.get("/v2/acme/app/manifests/secret")).status_code == 200
        robot = await c.post(
            "/api/v1/namespaces/acme/robots",
            json={"name": "reader", "access": [{"organization": "acme", "actions": ["pull"]}]},
        )
        assert robot.status_code == 201, robot.text
        creds = robot.json()
        r = await c.get("/v2/acme/app/manifests/secret", auth=(creds["name"], creds["secret"]))
        assert r.status_code == 403 and "withheld" in r.text
        r = await c.get("/v2/acme/app/manifests/keep", auth=(creds["name"], creds["secret"]))
        assert r.status_code == 200


async def test_api_ui_jobs_and_cli_of_a_capability(app: Moorage) -> None:
    assert app.rt is not None
    assert "toy.scan" in app.rt.job_kinds
    async with _client(app) as c:
        r = await c.get("/api/v1/toy/hello")
        assert r.status_code == 200 and r.json() == {"hello": "admin", "started": True}
        doc = (await c.get("/api/v1/openapi.json")).json()
        assert "/toy/hello" in doc["paths"]
        jobs_page = await c.get("/api/v1/jobs")
        assert jobs_page.status_code == 200 and jobs_page.json()["items"] == []
        # The UI: sign in, find the toy's navigation entry and page.
        login = await c.get("/login")
        token = login.text.split('name="csrf_token" value="')[1].split('"')[0]
        r = await c.post(
            "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token}
        )
        assert r.status_code == 303
        home = await c.get("/", auth=None)
        assert 'href="/ui/toy"' in home.text and 'href="/ui/jobs"' in home.text
        assert (await c.get("/ui/toy", auth=None)).text == "toy page for admin"
    args = build_parser((TOY,)).parse_args(["toy"])
    assert args.func(args) == 0


async def test_each_capability_names_the_job_kinds_its_setup_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job_kinds are spelled in each wiring module (so that naming them imports nothing): they
    must be exactly what setup registers, or `moorage jobs run KIND` refuses a real kind."""
    from moorage.capabilities import installed
    from moorage.db.engine import upgrade
    from moorage.jobs.tasks import KNOWN_KINDS
    from moorage.runtime import start_runtime, stop_runtime

    monkeypatch.setenv("MOORAGE_ADMIN_PASSWORD", PASSWORD)
    config = load_config(None, overrides={"data_dir": str(tmp_path), "jobs.enabled": False})
    await upgrade(config.database_url)
    caps = installed()
    before: frozenset[str] = frozenset()
    # Each capability set up after those before it (a later one may use an earlier one's
    # services, as scan uses vulndb's matcher): what it adds is its own.
    for n in range(len(caps) + 1):
        rt = await start_runtime(config, run_jobs=False, capabilities=caps[:n], pool_size=2)
        try:
            kinds = rt.job_kinds
        finally:
            await stop_runtime(rt)
        if n == 0:
            assert kinds <= KNOWN_KINDS
        else:
            assert kinds - before == set(caps[n - 1].job_kinds), caps[n - 1].name
        before = kinds


def test_the_command_line_imports_no_service_to_parse_itself() -> None:
    """Every `moorage` process builds the whole parser; what it imports to do so is paid by
    each command (it was ~1.7 s of CPU when the wiring and command modules imported their
    services, the HTTP client and sigstore)."""
    import subprocess
    import sys

    probe = (
        "import sys; from moorage.cli import build_parser; build_parser(); "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split())  # fmt: skip
    heavy = {"httpx", "sigstore", "ldap3", "jwt", "prometheus_client", "starlette", "uvicorn"}
    services = {m for m in loaded if m.endswith((".service", ".services.catalog", ".runner", ".outbox"))}  # fmt: skip
    assert not (heavy & loaded), heavy & loaded
    assert not services, services
