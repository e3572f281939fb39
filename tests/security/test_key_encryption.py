"""Token signing keys encrypted at rest (``auth.token.key_encryption_secret``): no private PEM in
the database, nodes sharing the secret verify each other's tokens, a plaintext key from before is
encrypted at the next start, and a wrong or missing secret stops the start with a clear message."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, postgres_database

SECRET = "a-key-encryption-secret-of-some-length"
ENV = "MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET"


def token(server: MoorageServer, offline: bool = False) -> dict[str, str]:
    params = {"service": "moorage", "offline_token": "true" if offline else "false"}
    r = httpx.get(
        f"{server.url}/auth/token", params=params, auth=("admin", ADMIN_PASSWORD), timeout=60
    )
    assert r.status_code == 200, r.text
    body: dict[str, str] = r.json()
    return body


def accepted(server: MoorageServer, jwt: str) -> bool:
    r = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {jwt}"}, timeout=60)
    return r.status_code == 200


def stored_private_keys(server: MoorageServer) -> list[str]:
    with contextlib.closing(sqlite3.connect(server.data_dir / "moorage.db")) as db:
        return [row[0] for row in db.execute("SELECT private_pem FROM signing_keys")]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="moorage-keys-") as tmp:
        yield Path(tmp) / "data"


def sqlite_server(data_dir: Path, secret: str | None) -> MoorageServer:
    env = {"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    if secret is not None:
        env[ENV] = secret
    return MoorageServer(data_dir, env=env)


def test_plaintext_key_is_encrypted_at_start_and_a_wrong_secret_refuses(data_dir: Path) -> None:
    srv = sqlite_server(data_dir, None).start()
    try:
        [before] = stored_private_keys(srv)
        assert "BEGIN PRIVATE KEY" in before  # today's behaviour without a secret
        old = token(srv, offline=True)
    finally:
        srv.stop()

    srv = sqlite_server(data_dir, SECRET).start()
    try:
        [after] = stored_private_keys(srv)
        assert after.startswith("enc:v1:") and "PRIVATE KEY" not in after
        assert accepted(srv, old["token"])  # the same key, now encrypted
        refreshed = httpx.post(
            f"{srv.url}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": old["refresh_token"]},
            timeout=60,
        )
        assert refreshed.status_code == 200 and accepted(srv, refreshed.json()["token"])
    finally:
        srv.stop()

    for secret, says in (
        ("not-the-secret-it-was-encrypted-with", "wrong secret"),
        (None, "is not set"),
    ):
        with pytest.raises(RuntimeError) as exc:
            sqlite_server(data_dir, secret).start()
        message = str(exc.value)
        assert "configuration error" in message and says in message, message
        assert "Traceback" not in message, message

    # `moorage admin rotate-keys` with a wrong secret would add a key no node can read.
    def rotate(secret: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, ENV: secret}
        cmd = [sys.executable, "-m", "moorage.cli", "admin", "rotate-keys", "--data-dir"]
        return subprocess.run(
            [*cmd, str(data_dir)], env=env, capture_output=True, text=True, timeout=120
        )

    bad = rotate("not-the-secret-it-was-encrypted-with")
    assert bad.returncode == 2 and "wrong secret" in bad.stderr, bad.stderr
    assert len(stored_private_keys(srv)) == 1
    assert rotate(SECRET).returncode == 0
    keys = stored_private_keys(srv)
    assert len(keys) == 2 and all(k.startswith("enc:v1:") for k in keys)


def test_nodes_sharing_the_secret_verify_each_others_tokens() -> None:
    with (
        postgres_database() as url,
        tempfile.TemporaryDirectory(prefix="moorage-keys-") as tmp,
    ):
        env = {"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, ENV: SECRET}
        a = MoorageServer(Path(tmp) / "a", database_url=url, env=env).start()
        try:
            b = MoorageServer(Path(tmp) / "b", database_url=url, env=env).start()
            try:
                assert accepted(b, token(a)["token"]) and accepted(a, token(b)["token"])
                with httpx.Client(timeout=60) as c:
                    keys = c.get(f"{a.url}/auth/jwks.json").json()["keys"]
                assert len(keys) == 1  # one key for both, created once
            finally:
                b.stop()
        finally:
            a.stop()
        stored = subprocess.run(
            ["psql", url, "-At", "-c", "SELECT private_pem FROM signing_keys"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert stored.startswith("enc:v1:") and "PRIVATE KEY" not in stored
