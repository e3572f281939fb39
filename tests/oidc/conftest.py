"""A real OpenID provider for the tests: panva/oidc-provider 9 (npm, pinned in
tests/oidc/provider/package-lock.json) run by node on a free loopback port, with one
confidential client and users with groups. `.ci/run` installs its node_modules with `npm ci`;
run from a checkout without them, the fixture does the same first."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import skopeo, skopeo_env  # noqa: F401 - fixtures of the SSO test

from ..conftest import STARTUP_TIMEOUT, free_port, stop_process

PROVIDER_DIR = Path(__file__).resolve().parent / "provider"
CLIENT_ID = "moorage-test"
CLIENT_SECRET = "moorage-test-client-secret-0123456789"
USERS = {
    "alice": {
        "password": "alice-password-1",
        "name": "Alice Example",
        "email": "alice@example.com",
        "groups": ["platform", "moorage-admins"],
    },
    "bob": {"password": "bob-password-1", "name": "Bob", "email": "bob@example.com", "groups": []},
    # A name a local Moorage account has in the single sign-on tests: never taken over.
    "carol": {
        "password": "carol-password-1",
        "name": "Carol",
        "email": "carol@example.com",
        "groups": ["platform"],
    },
}


@dataclass
class OpenIDProvider:
    issuer: str
    redirect_uri: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10000:]


def _ensure_node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are installed by .ci/run")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )


@contextlib.contextmanager
def openid_provider(
    tmp: Path, id_token_ttl: int = 600, redirect_uri: str | None = None
) -> Iterator[OpenIDProvider]:
    _ensure_node_modules()
    port = free_port()
    redirect_uri = redirect_uri or f"http://127.0.0.1:{free_port()}/auth/oidc/callback"
    env = dict(os.environ)
    env.update(
        OP_PORT=str(port),
        OP_ID_TOKEN_TTL=str(id_token_ttl),
        OP_USERS=json.dumps(USERS),
        OP_CLIENTS=json.dumps(
            [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [redirect_uri],
                    "response_types": ["code"],
                    "grant_types": ["authorization_code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                }
            ]
        ),
    )
    log_path = tmp / f"openid-provider-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["node", "server.js"], cwd=PROVIDER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    op = OpenIDProvider(f"http://127.0.0.1:{port}", redirect_uri, proc, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the OpenID provider exited:\n{op.log()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{op.issuer}/.well-known/openid-configuration", timeout=2)
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the OpenID provider did not start:\n{op.log()}")
            time.sleep(0.1)
        yield op
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIDProvider]:
    with openid_provider(tmp_path_factory.mktemp("oidc")) as op:
        yield op
