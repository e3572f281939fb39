"""The trust pages of the web UI (in-process, signed in through the login form): the trust
column of the repository page, the Signatures section of the image page, a namespace's
configuration changed through its forms (CSRF-checked, the same service as the API), a
repository's policy form, and the signatures page of a digest."""

from __future__ import annotations

import re

import httpx

from moorage.app import Moorage

from .helpers import new_key, public_pem
from .push import push_cosign_signature, push_image
from .test_capability import PASSWORD, add_key, app, client, drain, set_policy, setup_org

__all__ = ["app"]  # the fixture


async def sign_in(c: httpx.AsyncClient) -> str:
    login = await c.get("/login")
    token = login.text.split('name="csrf_token" value="')[1].split('"')[0]
    r = await c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    home = await c.get("/", auth=None)
    return home.text.split('name="csrf_token" value="')[1].split('"')[0] if "csrf_token" in home.text else ""


def csrf(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, "no form on the page"
    return m.group(1)


async def test_trust_column_panel_and_forms(app: Moorage) -> None:
    assert app.rt is not None
    key = new_key("p256")
    async with client(app) as c:
        await setup_org(c)
        signed, _ = await push_image(c, "acme/app", "v1")
        unsigned, _ = await push_image(c, "acme/app", "v2")
        assert (await add_key(c, "acme", "alice", key)).status_code == 201
        await push_cosign_signature(c, "acme/app", signed, [key])
        await drain(app.rt)
        await sign_in(c)
        page = await c.get("/ui/repositories/acme/app", auth=None)
        assert page.status_code == 200 and "<th>Trust</th>" in page.text
        assert f'href="/ui/repositories/acme/app/-/trust/{signed}" class="badge ok"' in page.text
        assert f'href="/ui/repositories/acme/app/-/trust/{unsigned}" class="badge warn"' in page.text
        image = await c.get(f"/ui/repositories/acme/app/manifests/{signed}", auth=None)
        assert image.status_code == 200 and "<h2>Signatures</h2>" in image.text
        assert 'id="trust-verdict">trusted' in image.text and "key alice" in image.text
        detail = await c.get(f"/ui/repositories/acme/app/-/trust/{signed}", auth=None)
        assert detail.status_code == 200 and "verified" in detail.text
        assert "No pull policy" in detail.text

        # A key added through the namespace page's form.
        ns = await c.get("/ui/trust/ns/acme", auth=None)
        assert ns.status_code == 200 and "<code>alice</code>" in ns.text
        bob = public_pem(new_key("ed25519")).decode()
        r = await c.post(
            "/ui/trust/ns/acme/add-key",
            data={"csrf_token": csrf(ns.text), "name": "bob", "public_key": bob},
            auth=None,
        )
        assert r.status_code == 303 and r.headers["location"].endswith("done=trust-saved")
        ns = await c.get("/ui/trust/ns/acme", auth=None)
        assert "<code>bob</code>" in ns.text and "configuration version 2" in ns.text
        # A bad one is refused with the reason; without the CSRF token nothing happens.
        r = await c.post(
            "/ui/trust/ns/acme/add-key",
            data={"csrf_token": csrf(ns.text), "name": "bad", "public_key": "nope"},
            auth=None,
        )
        assert r.status_code == 400 and "PEM public key" in r.text
        r = await c.post("/ui/trust/ns/acme/add-key", data={"name": "x", "public_key": bob}, auth=None)
        assert r.status_code == 403

        # The repository's own policy, through its form; the pull is then refused for v2.
        trust_page = await c.get("/ui/repositories/acme/app/-/trust", auth=None)
        assert trust_page.status_code == 200 and "pulls are not checked" in trust_page.text
        r = await c.post(
            "/ui/repositories/acme/app/-/trust/policy",
            data={"csrf_token": csrf(trust_page.text), "require_signature": "on", "signers": "alice"},
            auth=None,
        )
        assert r.status_code == 303, r.text
        trust_page = await c.get("/ui/repositories/acme/app/-/trust", auth=None)
        assert "This repository&#39;s own policy" in trust_page.text or "This repository's own policy" in trust_page.text
        assert "signed-only pulls" in trust_page.text
        overview = await c.get("/ui/trust", auth=None)
        assert 'href="/ui/repositories/acme/app/-/trust">acme/app</a>' in overview.text
        assert (await c.get("/v2/acme/app/manifests/v2")).status_code == 403
        assert (await c.get("/v2/acme/app/manifests/v1")).status_code == 200
    # Signed out: the pages send to the login form.
    async with client(app, None) as anon:
        r = await anon.get("/ui/repositories/acme/app/-/trust")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = await anon.get("/ui/trust/ns/acme")
        assert r.status_code == 303


async def test_policy_set_through_the_namespace_form_names_signers(app: Moorage) -> None:
    async with client(app) as c:
        await setup_org(c)
        assert (await add_key(c, "*", "release", new_key("p256"))).status_code == 201
        await sign_in(c)
        ns = await c.get("/ui/trust/ns/%2A", auth=None)
        assert ns.status_code == 200 and "System default" in ns.text
        r = await c.post(
            "/ui/trust/ns/%2A/policy",
            data={"csrf_token": csrf(ns.text), "require_signature": "on", "signers": "release, nobody"},
            auth=None,
        )
        assert r.status_code == 400 and "nobody" in r.text
        r = await c.post(
            "/ui/trust/ns/%2A/policy",
            data={"csrf_token": csrf(ns.text), "require_signature": "on", "signers": "release"},
            auth=None,
        )
        assert r.status_code == 303
        assert (await set_policy(c, "acme")).status_code == 200
        policies = (await c.get("/api/v1/trust/policies")).json()["items"]
        assert [p["target"] for p in policies] == ["*", "acme"]
