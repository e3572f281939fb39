"""The trust capability in a real application (in-process ASGI, SQLite, the job runner driven by
the test): signatures discovered on push and verified by the jobs, signed-only pulls refused with
403 DENIED naming the policy and what is missing, signers and signature readers never blocked,
configuration refused when invalid, audited, and a key or policy change flipping a verdict.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from moorage.app import Moorage
from moorage.config import load_config
from moorage.runtime import Runtime
from moorage.trust import Subject
from moorage.trust.tables import trust_artifacts, trust_results

from .helpers import make_ca, make_leaf, new_key, public_pem
from .push import (
    OCI_INDEX,
    OCI_MANIFEST,
    push_blob,
    push_cosign_signature,
    push_image,
    push_notation_signature,
    put_manifest,
    sha256,
)

PASSWORD = "trust-capability-password"


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Moorage]:
    from moorage.auth.bootstrap import bootstrap
    from moorage.db.engine import upgrade

    monkeypatch.setenv("MOORAGE_ADMIN_PASSWORD", PASSWORD)
    config = load_config(None, overrides={"data_dir": str(tmp_path), "jobs.enabled": False})
    await upgrade(config.database_url)
    await bootstrap(config)
    moorage = Moorage(config)
    await moorage.startup()
    try:
        yield moorage
    finally:
        await moorage.shutdown()


def client(app: Moorage, auth: Any = ("admin", PASSWORD)) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://testserver",
        auth=auth,
    )


async def drain(rt: Runtime) -> None:
    """Run queued jobs until none is left (what a node's runner does in the background)."""
    for _ in range(50):
        started = await rt.jobs.run_once()
        running = list(rt.jobs._running.values())
        if running:
            await asyncio.gather(*running)
        if not started:
            return


async def robot(c: httpx.AsyncClient, org: str, actions: list[str], name: str = "reader") -> tuple[str, str]:
    r = await c.post(
        f"/api/v1/namespaces/{org}/robots",
        json={"name": name, "access": [{"organization": org, "actions": actions}]},
    )
    assert r.status_code == 201, r.text
    return r.json()["name"], r.json()["secret"]


async def setup_org(c: httpx.AsyncClient, org: str = "acme") -> None:
    r = await c.post("/api/v1/organizations", json={"name": org})
    assert r.status_code == 201, r.text


async def add_key(c: httpx.AsyncClient, ns: str, name: str, key: Any) -> httpx.Response:
    return await c.post(
        f"/api/v1/trust/namespaces/{ns}/keys",
        json={"name": name, "public_key": public_pem(key).decode()},
    )


async def set_policy(c: httpx.AsyncClient, target: str, **body: Any) -> httpx.Response:
    return await c.put(f"/api/v1/trust/policies/{target}", json={"require_signature": True, **body})


async def results_count(app: Moorage) -> int:
    assert app.ctx is not None
    async with app.ctx.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(trust_results)) or 0)


async def test_signed_only_pull_end_to_end(app: Moorage) -> None:
    assert app.rt is not None
    alice = new_key("p256")
    async with client(app) as c:
        await setup_org(c)
        digest, _ = await push_image(c, "acme/app", "v1")
        assert (await add_key(c, "acme", "alice", alice)).status_code == 201
        r = await set_policy(c, "acme", signers=["alice"])
        assert r.status_code == 200, r.text
        name, secret = await robot(c, "acme", ["pull"])
    async with client(app, (name, secret)) as puller:
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 403
        err = r.json()["errors"][0]
        assert err["code"] == "DENIED"
        assert "content trust policy 'acme'" in err["message"] and "missing: alice" in err["message"]
        assert (await puller.head("/v2/acme/app/manifests/v1")).status_code == 403
        assert (await puller.get(f"/v2/acme/app/manifests/{digest}")).status_code == 403
        # Blobs are not content rules' business.
        manifest = json.loads((await client(app).get(f"/v2/acme/app/manifests/{digest}")).content)
        blob = manifest["layers"][0]["digest"]
        assert (await puller.get(f"/v2/acme/app/blobs/{blob}")).status_code == 200
    async with client(app) as c:
        # The administrator may push: by digest they read (what a signer does), by tag not.
        assert (await c.get(f"/v2/acme/app/manifests/{digest}")).status_code == 200
        assert (await c.get("/v2/acme/app/manifests/v1")).status_code == 403
        contract = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/trust")).json()
        assert contract["verdict"] == "unsigned" and contract["signatures"] == []
        assert contract["policy"]["target"] == "acme" and contract["policy"]["missing"] == ["alice"]
        assert set(contract) == {"verdict", "policy", "signatures"}
        sig = await push_cosign_signature(c, "acme/app", digest, [alice])
    async with client(app, (name, secret)) as puller:
        # Verified on the pull's cache miss, before any job ran.
        assert await results_count(app) == 0
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 200, r.text
        # The signature itself is always readable (cosign verify), by tag and by digest.
        tag = digest.replace(":", "-") + ".sig"
        assert (await puller.get(f"/v2/acme/app/manifests/{tag}")).status_code == 200
        assert (await puller.get(f"/v2/acme/app/manifests/{sig}")).status_code == 200
    await drain(app.rt)
    assert await results_count(app) == 1
    async with client(app) as c:
        contract = (await c.get(f"/api/v1/repositories/acme/app/-/manifests/{digest}/trust")).json()
        assert contract["verdict"] == "trusted"
        [s] = contract["signatures"]
        assert set(s) == {"kind", "digest", "verified", "reason", "signer", "key", "signed_at"}
        assert s["kind"] == "cosign" and s["digest"] == sig and s["verified"] is True
        assert s["key"] == "alice" and s["signer"] == "key alice (ECDSA P-256)"
        detail = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/signatures")).json()
        assert detail["signatures"][0]["status"] == "verified"
        assert detail["signatures"][0]["docker_reference"] == "registry.example/app"
        tags = (await c.get("/api/v1/repositories/acme/app/-/trust")).json()
        verdicts = {t["tag"]: t["verdict"] for t in tags["items"]}
        assert verdicts == {"v1": "trusted", tag: "unsigned"} and tags["enforced"] is True
        await app.audit.flush()  # type: ignore[union-attr]
        audit = (await c.get("/api/v1/audit", params={"action": "trust.pull.denied"})).json()
        denied = [e for e in audit["events"] if e["action"] == "trust.pull.denied"]
        mine = [e for e in denied if e["actor"] == name]
        assert mine and {e["actor"] for e in denied} == {name, "admin"}
        assert mine[0]["details"] == {"policy": "acme", "verdict": "unsigned", "missing": ["alice"]}
        assert mine[0]["result"] == "denied" and mine[0]["repository"] == "acme/app"
        changes = (await c.get("/api/v1/audit", params={"action": "trust.key.add"})).json()
        assert any(e["details"]["name"] == "alice" for e in changes["events"])


async def test_key_removal_and_policy_change_flip_the_verdict(app: Moorage) -> None:
    assert app.rt is not None
    alice, bob = new_key("p256"), new_key("ed25519")
    async with client(app) as c:
        await setup_org(c)
        digest, _ = await push_image(c, "acme/app", "v1")
        assert (await add_key(c, "acme", "alice", alice)).status_code == 201
        assert (await add_key(c, "acme", "bob", bob)).status_code == 201
        await push_cosign_signature(c, "acme/app", digest, [alice])
        await drain(app.rt)
        assert (await set_policy(c, "acme/app")).status_code == 200
        name, secret = await robot(c, "acme", ["pull"])
        puller = client(app, (name, secret))
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 200, r.text
        # Two-person rule: alice and bob. Only alice signed.
        assert (await set_policy(c, "acme/app", signers=["alice", "bob"], require_all=True)).status_code == 200
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 403 and "missing: bob" in r.json()["errors"][0]["message"]
        detail = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/signatures")).json()
        assert detail["verdict"] == "untrusted" and detail["missing"] == ["bob"]
        # cosign adds a signature by pushing a new .sig manifest holding both.
        await push_cosign_signature(c, "acme/app", digest, [alice, bob])
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 200, r.text
        await drain(app.rt)
        detail = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/signatures")).json()
        assert [s["status"] for s in detail["signatures"]] == ["verified", "verified"]
        assert {s["key"] for s in detail["signatures"]} == {"alice", "bob"}
        # Only bob is required now: alice's signature still verifies but no longer counts.
        assert (await set_policy(c, "acme/app", signers=["bob"])).status_code == 200
        detail = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/signatures")).json()
        assert [s["status"] for s in detail["signatures"]] == ["untrusted", "verified"]
        # Removing bob's key: the configuration version moves, the jobs verify again, and the
        # pull is refused (on this node at once, from memory, before the jobs ran).
        old = detail["config_version"]
        r = await c.delete("/api/v1/trust/namespaces/acme/signers/bob")
        assert r.status_code == 204, r.text
        r = await puller.get("/v2/acme/app/manifests/v1")
        assert r.status_code == 403
        await drain(app.rt)
        detail = (await c.get("/api/v1/repositories/acme/app/-/manifests/v1/signatures")).json()
        assert detail["config_version"] != old
        assert detail["signatures"][1]["status"] == "failed"
        assert "does not verify with any configured key" in detail["signatures"][1]["reason"]
        jobs = (await c.get("/api/v1/jobs", params={"kind": "trust.reverify"})).json()["items"]
        assert jobs and jobs[0]["state"] == "succeeded" and jobs[0]["progress"]["done"] >= 1
        # Policy off: pulls are not checked.
        assert (await c.put("/api/v1/trust/policies/acme/app", json={"require_signature": False})).status_code == 200
        assert (await puller.get("/v2/acme/app/manifests/v1")).status_code == 200
        await puller.aclose()


async def test_notation_referrer_and_system_default_store(app: Moorage) -> None:
    assert app.rt is not None
    root = make_ca("Notation Root")
    leaf = make_leaf(root, "release-builder")
    async with client(app) as c:
        await setup_org(c)
        digest, manifest = await push_image(c, "acme/svc", "1.0")
        r = await c.post(
            "/api/v1/trust/namespaces/*/notation-stores",
            json={"name": "corp", "type": "ca", "certificates": [root.pem.decode()]},
        )
        assert r.status_code == 201, r.text
        assert (await set_policy(c, "*", signers=["corp"])).status_code == 200
        name, secret = await robot(c, "acme", ["pull"])
        puller = client(app, (name, secret))
        assert (await puller.get("/v2/acme/svc/manifests/1.0")).status_code == 403
        subject = Subject(digest, OCI_MANIFEST, len(manifest))
        sig = await push_notation_signature(c, "acme/svc", subject, leaf, [root])
        # The referrers API and the signature are never blocked.
        refs = (await puller.get(f"/v2/acme/svc/referrers/{digest}")).json()
        assert [m["digest"] for m in refs["manifests"]] == [sig]
        assert (await puller.get(f"/v2/acme/svc/manifests/{sig}")).status_code == 200
        assert (await puller.get("/v2/acme/svc/manifests/1.0")).status_code == 200
        await drain(app.rt)
        contract = (await c.get("/api/v1/repositories/acme/svc/-/manifests/1.0/trust")).json()
        assert contract["verdict"] == "trusted"
        [s] = contract["signatures"]
        assert s["kind"] == "notation" and s["key"] == "ca:corp"
        assert "CN=release-builder" in s["signer"] and s["signed_at"]
        await puller.aclose()


async def test_index_children_are_trusted_through_a_signed_index(app: Moorage) -> None:
    assert app.rt is not None
    key = new_key("p384")
    async with client(app) as c:
        await setup_org(c)
        child, payload = await push_image(c, "acme/multi", "child")
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child,
                    "size": len(payload),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
        top, _ = await put_manifest(c, "acme/multi", "latest", index, OCI_INDEX)
        assert (await add_key(c, "acme", "ci", key)).status_code == 201
        assert (await set_policy(c, "acme/multi")).status_code == 200
        await push_cosign_signature(c, "acme/multi", top, [key])
        name, secret = await robot(c, "acme", ["pull"])
        async with client(app, (name, secret)) as puller:
            assert (await puller.get("/v2/acme/multi/manifests/latest")).status_code == 200
            assert (await puller.get(f"/v2/acme/multi/manifests/{child}")).status_code == 200
            # The child's own tag points at an unsigned manifest — trusted through the index.
            assert (await puller.get("/v2/acme/multi/manifests/child")).status_code == 200
        contract = (await c.get(f"/api/v1/repositories/acme/multi/-/manifests/{child}/trust")).json()
        assert contract["verdict"] == "trusted" and contract["policy"]["via_index"] == top


async def test_invalid_configuration_is_refused_when_saved(app: Moorage) -> None:
    async with client(app) as c:
        await setup_org(c)
        r = await c.post(
            "/api/v1/trust/namespaces/acme/keys", json={"name": "bad", "public_key": "not a key"}
        )
        assert r.status_code == 422 and "PEM public key" in r.json()["error"]["message"]
        r = await c.post(
            "/api/v1/trust/namespaces/acme/keys",
            json={
                "name": "dsa",
                "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            },
        )
        assert r.status_code == 422, r.text
        r = await c.post(
            "/api/v1/trust/namespaces/acme/keyless",
            json={"name": "ci", "identity": "me@example.com", "issuer": "https://issuer.example"},
        )
        assert r.status_code == 422 and "trusted_root.json" in r.json()["error"]["message"]
        r = await c.put(
            "/api/v1/trust/namespaces/acme/notation-policy",
            json={"policy": {"version": "2.0", "trustPolicies": []}},
        )
        assert r.status_code == 422 and "version" in r.json()["error"]["message"]
        r = await c.put(
            "/api/v1/trust/namespaces/acme/trusted-root", json={"trusted_root": {"x": 1}}
        )
        assert r.status_code == 422, r.text
        r = await set_policy(c, "acme", signers=["nobody"])
        assert r.status_code == 422 and "nobody" in r.json()["error"]["message"]
        r = await c.post(
            "/api/v1/trust/namespaces/acme/notation-stores",
            json={"name": "s", "certificates": ["-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----"]},
        )
        assert r.status_code == 422, r.text
        key = new_key("rsa2048")
        assert (await add_key(c, "acme", "k", key)).status_code == 201
        assert (await add_key(c, "acme", "k", key)).status_code == 409
        cfg = (await c.get("/api/v1/trust/namespaces/acme")).json()
        assert [e["name"] for e in cfg["entries"]] == ["k"] and cfg["version"] == 1
        # Someone who is not an admin of acme may not change it, nor the system default.
        name, secret = await robot(c, "acme", ["pull", "push"])
    async with client(app, (name, secret)) as other:
        assert (await add_key(other, "acme", "x", new_key("p256"))).status_code == 403
        assert (await add_key(other, "*", "x", new_key("p256"))).status_code == 403
        assert (await set_policy(other, "acme/app")).status_code == 403


async def test_decisions_follow_changes_made_by_another_node(app: Moorage, tmp_path: Path) -> None:
    """A second runtime on the same database (another node, or the CLI) changes the policy;
    this node sees it once its refresh interval has passed, not before."""
    from moorage.runtime import start_runtime, stop_runtime
    from moorage.trust.admin import system_caller

    assert app.rt is not None
    service = app.rt.services["trust"]
    async with client(app) as c:
        await setup_org(c)
        digest, _ = await push_image(c, "acme/app", "v1")
    assert await service.decide("acme/app", digest) is None  # no policy
    other = await start_runtime(app.config, run_jobs=False, pool_size=1)
    try:
        await other.services["trust.admin"].set_policy(
            system_caller("cli:test"), "acme", require_signature=True
        )
    finally:
        await stop_runtime(other)
    assert await service.decide("acme/app", digest) is None  # still within the interval
    service._checked_at -= service.refresh_seconds  # the interval passes
    decision = await service.decide("acme/app", digest)
    assert decision is not None and not decision.allowed and decision.verdict == "unsigned"
    async with app.ctx.engine.connect() as conn:  # type: ignore[union-attr]
        assert await conn.scalar(sa.select(sa.func.count()).select_from(trust_artifacts)) == 0


async def test_attachments_and_referrers_are_never_blocked(app: Moorage) -> None:
    async with client(app) as c:
        await setup_org(c)
        digest, manifest = await push_image(c, "acme/app", "v1")
        assert (await set_policy(c, "acme")).status_code == 200
        # An SBOM attachment (cosign .sbom tag) and an arbitrary referrer (oras attach).
        blob = await push_blob(c, "acme/app", b'{"spdxVersion": "SPDX-2.3"}')
        empty = await push_blob(c, "acme/app", b"{}")
        att = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "text/spdx+json", "digest": blob, "size": 27}],
        }
        sbom_tag = digest.replace(":", "-") + ".sbom"
        sbom, _ = await put_manifest(c, "acme/app", sbom_tag, att)
        ref = dict(att, artifactType="application/spdx+json",
                   subject={"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)})  # fmt: skip
        referrer, _ = await put_manifest(c, "acme/app", "sbom-ref", ref)
        name, secret = await robot(c, "acme", ["pull"])
    async with client(app, (name, secret)) as puller:
        assert (await puller.get("/v2/acme/app/manifests/v1")).status_code == 403
        assert (await puller.get(f"/v2/acme/app/manifests/{sbom_tag}")).status_code == 200
        assert (await puller.get(f"/v2/acme/app/manifests/{sbom}")).status_code == 200
        assert (await puller.get(f"/v2/acme/app/manifests/{referrer}")).status_code == 200
        assert (await puller.get("/v2/acme/app/manifests/sbom-ref")).status_code == 200


async def test_signature_pushed_before_its_image(app: Moorage) -> None:
    """A copy that brings the signature first: the job retries, a pull verifies in memory,
    and a re-verification stores the result."""
    assert app.rt is not None
    key = new_key("p256")
    async with client(app) as c:
        await setup_org(c)
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": await push_blob(c, "acme/app", config),
                "size": len(config),
            },
            "layers": [],
        }
        digest = sha256(json.dumps(doc).encode())
        assert (await add_key(c, "acme", "k", key)).status_code == 201
        assert (await set_policy(c, "acme")).status_code == 200
        await push_cosign_signature(c, "acme/app", digest, [key])
        await drain(app.rt)
        jobs = (await c.get("/api/v1/jobs", params={"kind": "trust.verify"})).json()["items"]
        assert jobs[0]["state"] == "queued" and "is not in acme/app (yet)" in jobs[0]["error"]
        pushed, _ = await put_manifest(c, "acme/app", "v1", doc)
        assert pushed == digest
        name, secret = await robot(c, "acme", ["pull"])
        async with client(app, (name, secret)) as puller:
            assert (await puller.get("/v2/acme/app/manifests/v1")).status_code == 200
        r = await c.post("/api/v1/trust/namespaces/acme/reverify")
        assert r.status_code == 202 and r.json()["job"]
        await drain(app.rt)
        assert await results_count(app) == 1


async def test_hostile_requests_get_clear_errors(app: Moorage) -> None:
    async with client(app) as c:
        await setup_org(c)
        await push_image(c, "acme/app", "v1")
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(200):
            node["x"] = {}
            node = node["x"]
        for path, body in (
            ("notation-policy", {"policy": deep}),
            ("trusted-root", {"trusted_root": deep}),
        ):
            r = await c.put(f"/api/v1/trust/namespaces/acme/{path}", json=body)
            assert r.status_code in (400, 422), r.text
        r = await c.post(
            "/api/v1/trust/namespaces/acme/keys", json={"name": "a\x00b", "public_key": "x"}
        )
        assert r.status_code in (400, 422)
        r = await c.post(
            "/api/v1/trust/namespaces/acme/notation-stores",
            json={"name": "s", "certificates": ["A" * 300_000]},
        )
        assert r.status_code == 422
        r = await c.post("/api/v1/trust/namespaces/Not*Valid/keys", json={"name": "a", "public_key": "x"})
        assert r.status_code in (400, 422)
        for ref in ("-bad", "sha256:zz", "a" * 200):
            r = await c.get(f"/api/v1/repositories/acme/app/-/manifests/{ref}/trust")
            assert r.status_code in (400, 404), (ref, r.text)
        r = await c.get("/api/v1/repositories/acme/nothing/-/manifests/v1/trust")
        assert r.status_code == 404
        r = await c.put("/api/v1/trust/policies/acme/app", json={"require_signature": "yes"})
        assert r.status_code == 422
        r = await c.put("/api/v1/trust/policies/UPPER", json={"require_signature": True})
        assert r.status_code in (400, 422)
