"""Secrets stay secret: robot secrets and personal access tokens shown once, never again (API,
UI, audit log, server log); no password hashes anywhere; ``moorage config`` masks every secret;
S3 keys never leave the configured prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.security.conftest import API, PASSWORD, Tenants, expect, login_form


def test_robot_secrets_and_tokens_are_shown_once(tenants: Tenants, sysadmin: httpx.Client) -> None:
    x = tenants.org["x"]
    name = f"s{uuid.uuid4().hex[:6]}"
    robot = expect(
        sysadmin.post(f"{API}/namespaces/{x}/robots", json={"name": name, "access": [{"organization": x, "actions": ["pull"]}]}),
        201,
    )  # fmt: skip
    secret = robot["secret"]
    regenerated = expect(sysadmin.post(f"{API}/namespaces/{x}/robots/{name}/secret"), 200)["secret"]
    pat = tenants.token("xadmin", None)
    secrets = [secret, regenerated, pat, pat.split("_", 3)[3], PASSWORD, "$argon2"]
    seen: list[str] = []
    for path in (
        f"/namespaces/{x}/robots",
        f"/namespaces/{x}/robots/{name}",
        f"/users/{tenants.users['xadmin']}/tokens",
        f"/users/{tenants.users['xadmin']}",
        "/users?limit=200",
        "/audit?limit=1000",
        "/audit/export?format=jsonl",
        "/audit/export?format=csv",
    ):
        r = sysadmin.get(API + path)
        assert r.status_code == 200, (path, r.text)
        seen.append(r.text)
        assert r.headers.get("cache-control", "no-store") == "no-store" or "export" in path
    with login_form(
        tenants.server, "admin", __import__("tests.conftest").conftest.ADMIN_PASSWORD
    ) as c:
        for path in ("/ui/robots", "/ui/account", "/ui/users", "/ui/audit"):
            r = c.get(path)
            assert r.status_code == 200
            seen.append(r.text)
    with login_form(tenants.server, tenants.users["xadmin"]) as c:
        seen.append(c.get("/ui/account").text)
        seen.append(c.get("/ui/robots").text)
    seen.append(
        (tenants.server.log_path.read_text(errors="replace")) if tenants.server.log_path else ""
    )
    for text in seen:
        for s in secrets:
            assert s not in text, f"{s[:12]}… leaked"
    assert f"{x}+{name}" in seen[0]  # the listing itself worked


def test_secret_pages_are_not_cached(tenants: Tenants) -> None:
    with login_form(tenants.server, tenants.users["outsider"]) as c:
        from tests.security.conftest import page_csrf

        r = c.post(
            "/ui/account/tokens",
            data={
                "name": f"n{uuid.uuid4().hex[:6]}",
                "scope:api:read": "on",
                "csrf_token": page_csrf(c),
            },
        )
        assert r.status_code == 200 and "moorage_pat_" in r.text
        assert r.headers["cache-control"] == "no-store"
    with tenants.client("outsider") as c:
        r = c.post(
            f"{API}/users/{tenants.users['outsider']}/tokens",
            json={"name": f"n{uuid.uuid4().hex[:6]}"},
        )
        assert r.status_code == 201 and r.headers["cache-control"] == "no-store"


def test_moorage_config_masks_every_secret(tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ)
    env.update(
        MOORAGE_DATABASE_URL="postgresql+asyncpg://moorage:DBP%40SS-secret@127.0.0.1:5432/x",
        MOORAGE_STORAGE_DRIVER="s3",
        MOORAGE_STORAGE_S3_BUCKET="b",
        MOORAGE_STORAGE_S3_ACCESS_KEY_ID="AKIDEXAMPLE",
        MOORAGE_STORAGE_S3_SECRET_ACCESS_KEY="S3-SECRET-value",
        MOORAGE_AUTH_LDAP_URL="ldap://127.0.0.1:389",
        MOORAGE_AUTH_LDAP_BIND_DN="cn=reader",
        MOORAGE_AUTH_LDAP_BIND_PASSWORD="LDAP-SECRET-value",
        MOORAGE_AUDIT_HTTP_URL="https://siem:HTTP-SECRET-value@siem.example.org/in",
        MOORAGE_AUDIT_HTTP_HEADERS=json.dumps({"Authorization": "Bearer HEADER-SECRET-value"}),
        MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET="KEY-ENCRYPTION-SECRET-value",
    )
    out = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "config", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for secret in (
        "DBP%40SS-secret",
        "S3-SECRET-value",
        "LDAP-SECRET-value",
        "HTTP-SECRET-value",
        "HEADER-SECRET-value",
        "KEY-ENCRYPTION-SECRET-value",
    ):
        assert secret not in out.stdout, secret
    doc = json.loads(out.stdout)
    assert doc["database"]["url"] == "postgresql+asyncpg://moorage:***@127.0.0.1:5432/x"
    assert doc["storage"]["s3"]["secret_access_key"] == "***"
    assert doc["storage"]["s3"]["access_key_id"] == "AKIDEXAMPLE"  # an id, not a secret
    assert doc["audit"]["http"]["headers"] == {"Authorization": "***"}
    assert doc["auth"]["token"]["key_encryption_secret"] == "***"


@pytest.mark.parametrize(
    "path",
    [
        "../escape",
        "blobs/../../escape",
        "blobs/./x",
        "blobs//x",
        "blobs/x\x00y",
        "blobs/%2e%2e/x",
        "blobs/x y",
    ],
)
def test_s3_keys_stay_under_the_prefix(path: str) -> None:
    from moorage.storage.base import StorageError
    from moorage.storage.s3 import S3Driver, S3Settings

    driver = S3Driver(
        S3Settings(
            bucket="b",
            endpoint="http://127.0.0.1:9",
            prefix="tenant/a",
            access_key_id="k",
            secret_access_key="s",
        )
    )
    with pytest.raises((ValueError, StorageError)):
        key = driver.key(path)
        pytest.fail(f"{path!r} became key {key!r}")
    assert driver.key("blobs/sha256/ab/abcd") == "tenant/a/blobs/sha256/ab/abcd"
    assert driver.key("/abs") == "tenant/a/abs"  # a leading slash stays under the prefix
    with pytest.raises((ValueError, StorageError)):
        S3Driver(
            S3Settings(
                bucket="b",
                endpoint="http://127.0.0.1:9",
                prefix="../other",
                access_key_id="k",
                secret_access_key="s",
            )
        )


def test_password_hashes_are_never_returned(tenants: Tenants, sysadmin: httpx.Client) -> None:
    users = expect(sysadmin.get(f"{API}/users?limit=200"), 200)["items"]
    assert users and all(
        set(u) >= {"username"} and "password_hash" not in u and "password" not in u for u in users
    )
    text = json.dumps(users) + sysadmin.get(f"{API}/user").text
    assert "argon2" not in text
