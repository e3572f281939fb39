"""Web UI tests: a real ``moorage serve`` (auth on, tests/conftest.py's ``auth_server``), driven
by headless Debian Chromium through Playwright, and pushed to by real skopeo.

Screenshots of the main pages land in ``build/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, launch_chromium
from tests.clients.harness import ClientEnv, Skopeo
from tests.clients.ocigen import make_image, make_multiarch_index, write_layout
from tests.conftest import ADMIN_PASSWORD, MoorageServer

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    m = CSRF_FIELD.search(html)
    assert m, "page has no csrf_token field"
    return m.group(1)


@contextlib.contextmanager
def login_http(
    server: MoorageServer, username: str = "admin", password: str = ADMIN_PASSWORD
) -> Iterator[httpx.Client]:
    """An httpx client signed in through the login form, as a browser would."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        form = c.get("/login")
        assert form.status_code == 200, form.text
        r = c.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_from(form.text)},
        )
        assert r.status_code == 303, r.text
        assert "moorage_session" in c.cookies
        yield c


@pytest.fixture(scope="session")
def ui_server(auth_server: MoorageServer) -> MoorageServer:
    return auth_server


@pytest.fixture(scope="session")
def skopeo_env() -> Iterator[ClientEnv]:
    """An isolated skopeo environment (its own config, policy, auth file and blob-info cache)."""
    root = Path(tempfile.mkdtemp(prefix="moorage-ui-clients-"))
    try:
        for name in ("home", "tmp", "registries.d", "runtime"):
            (root / name).mkdir()
        conf = root / "registries.conf"
        conf.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        policy = root / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "XDG_RUNTIME_DIR": str(root / "runtime"),
            "REGISTRY_AUTH_FILE": str(root / "runtime" / "auth.json"),
            "_CONTAINERS_ROOTLESS_UID": "1000",
            "_CONTAINERS_USERNS_CONFIGURED": "1",
        }
        yield ClientEnv(root, env, conf, root / "registries.d", policy)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def skopeo(skopeo_env: ClientEnv) -> Skopeo:
    binary = shutil.which("skopeo")
    if not binary:
        pytest.skip("skopeo is not installed")
    return Skopeo(binary, skopeo_env)


def skopeo_push(
    skopeo: Skopeo,
    server: MoorageServer,
    repo: str,
    tag: str,
    creds: str,
    multiarch: bool = True,
    check: bool = True,
) -> Any:
    """Push a freshly generated image (a two-platform index by default) with skopeo."""
    layout = Path(tempfile.mkdtemp(prefix="moorage-ui-layout-"))
    try:
        obj = make_multiarch_index() if multiarch else make_image()
        write_layout(layout, {tag: obj})
        return skopeo(
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            f"oci:{layout}:{tag}",
            f"docker://{server.host}/{repo}:{tag}",
            check=check,
        )
    finally:
        shutil.rmtree(layout, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser per test module. Not per session: Playwright's sync API keeps an event loop
    running in this thread while it is open, and every asyncio test after it would fail."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


def new_page(browser: Any, server: MoorageServer, javascript: bool = True) -> Any:
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1366, "height": 768}, java_script_enabled=javascript
    )
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.dialogs = dialogs  # what a test checks to prove no script ran
    return page


def browser_login(page: Any, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/")
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def admin_page(browser: Any, ui_server: MoorageServer) -> Iterator[Any]:
    page = new_page(browser, ui_server)
    browser_login(page)
    yield page
    page.context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
