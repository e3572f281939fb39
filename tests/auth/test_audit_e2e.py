"""Every action leaves exactly the expected audit record; the chain verifies, and tampering with
it is caught — against a running server, through the operator's commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx

from tests.auth.test_access import PASSWORD, admin_cli
from tests.conftest import ADMIN_PASSWORD, MoorageServer, image_manifest, put_manifest, sha256


def audit_cli(server: MoorageServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if server.database_url:
        env["MOORAGE_DATABASE_URL"] = server.database_url
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", "audit", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def records(server: MoorageServer, **filters: str) -> list[dict[str, object]]:
    args = [f"--{k}={v}" for k, v in filters.items()]
    r = audit_cli(server, "export", "--format", "jsonl", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_for(server: MoorageServer, predicate: object, **filters: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 15
    while True:
        got = records(server, **filters)
        if predicate(got) or time.monotonic() > deadline:  # type: ignore[operator]
            return got
        time.sleep(0.3)


def test_actions_are_recorded(auth_server: MoorageServer) -> None:
    s = uuid.uuid4().hex[:6]
    user, repo = f"aud{s}", f"aud{s}/app"
    admin_cli(auth_server, "create-user", user, "--password-stdin", stdin=PASSWORD + "\n")
    with httpx.Client(
        base_url=auth_server.url, auth=(user, PASSWORD), headers={"User-Agent": "audit-test/1"}
    ) as c:
        payload = image_manifest(c, repo)
        assert put_manifest(c, repo, "v1", payload).status_code == 201
        assert c.get(f"/v2/{repo}/manifests/v1").status_code == 200
        assert c.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    with httpx.Client(base_url=auth_server.url, auth=(f"other{s}", "not-a-password")) as c:
        assert c.get(f"/v2/{repo}/tags/list").status_code == 401
    r = httpx.get(
        f"{auth_server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{repo}:pull"},
        auth=(user, PASSWORD),
    )
    assert r.status_code == 200
    got = wait_for(auth_server, lambda rs: len(rs) >= 6, repository=repo)
    by_action: dict[str, list[dict[str, object]]] = {}
    for rec in got:
        by_action.setdefault(str(rec["action"]), []).append(rec)
    assert len(by_action["manifest.push"]) == 1
    push = by_action["manifest.push"][0]
    assert push["actor"] == user and push["actor_type"] == "user" and push["result"] == "success"
    assert push["tag"] == "v1" and push["digest"] == sha256(payload)
    assert push["client_addr"] == "127.0.0.1" and push["user_agent"] == "audit-test/1"
    assert push["request_id"]
    assert len(by_action["manifest.pull"]) == 1 and by_action["manifest.pull"][0]["tag"] == "v1"
    assert len(by_action["tag.delete"]) == 1
    assert len(by_action["blob.push"]) == 2  # config and layer
    logins = wait_for(
        auth_server, lambda rs: any(x["actor"] == user for x in rs), action="token.issue"
    )
    assert [x["result"] for x in logins if x["actor"] == user] == ["success"]
    fails = wait_for(auth_server, lambda rs: len(rs) > 0, action="login.failed")
    assert fails
    created = records(auth_server, action="user.create")
    assert any(
        x["details"] == {"user": user, "admin": False}
        or (isinstance(x["details"], dict) and x["details"].get("user") == user)
        for x in created
    )
    # A denied push is recorded as denied.
    with httpx.Client(base_url=auth_server.url, auth=(user, PASSWORD)) as c:
        assert put_manifest(c, f"admin/{s}", "x", b"{}").status_code == 403
    denied = wait_for(auth_server, lambda rs: len(rs) > 0, repository=f"admin/{s}")
    assert denied[0]["result"] == "denied" and denied[0]["action"] == "manifest.push"


def sql(server: MoorageServer, statement: str) -> str:
    """Run SQL on the server's database behind its back (what an intruder would do)."""
    if server.database_url:
        out = subprocess.run(
            ["psql", server.database_url, "-At", "-c", statement],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()
    import sqlite3

    with sqlite3.connect(server.data_dir / "moorage.db") as conn:
        rows = conn.execute(statement).fetchall()
    return "\n".join("|".join(str(v) for v in row) for row in rows)


def test_verify_detects_tampering(auth_server: MoorageServer) -> None:
    r = audit_cli(auth_server, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout
    rec_id, actor = sql(
        auth_server, "SELECT id, actor FROM audit_events ORDER BY id LIMIT 1"
    ).split("|", 1)
    sql(auth_server, f"UPDATE audit_events SET actor = 'mallory' WHERE id = {rec_id}")
    try:
        bad = audit_cli(auth_server, "verify")
        assert bad.returncode == 1
        assert rec_id in bad.stdout + bad.stderr
    finally:
        sql(auth_server, f"UPDATE audit_events SET actor = '{actor}' WHERE id = {rec_id}")
    assert audit_cli(auth_server, "verify").returncode == 0


def test_admin_password_for_api_clients_is_audited_on_failure(auth_server: MoorageServer) -> None:
    r = httpx.get(
        f"{auth_server.url}/auth/token",
        params={"service": "moorage"},
        auth=("admin", ADMIN_PASSWORD + "x"),
    )
    assert r.status_code == 401
    got = wait_for(
        auth_server, lambda rs: any(x["actor"] == "admin" for x in rs), action="login.failed"
    )
    assert any(x["actor"] == "admin" and x["result"] == "failure" for x in got)
