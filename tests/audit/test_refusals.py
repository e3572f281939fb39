"""Refusals in the audit log (issue 9 "audit of refusals", issue 11 "audit gaps"), against a
running ``moorage serve`` with access control on: a push skopeo is refused, every 401/403/429
on /v2 and /api/v1 (HEAD included), aggregated so that hammering cannot flood the log, failed
logins with the name tried kept out of ``actor``; ``moorage audit export`` shows them and
``moorage audit verify`` still passes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.ocigen import make_image, write_layout
from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    moorage_cli,
    put_manifest,
)

PASSWORD = "correct-horse-battery"
Record = dict[str, Any]


def export(server: MoorageServer, **filters: str) -> list[Record]:
    args = [f"--{k}={v}" for k, v in filters.items()]
    r = moorage_cli(server, "audit", "export", "--format", "jsonl", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_for(
    server: MoorageServer, predicate: Callable[[list[Record]], bool], **filters: str
) -> list[Record]:
    deadline = time.monotonic() + 20
    while True:
        got = export(server, **filters)
        if predicate(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def count(records: list[Record]) -> int:
    return sum(int(r["details"].get("count", 1)) for r in records)


@pytest.fixture(scope="module")
def setup(refusal_server: MoorageServer) -> dict[str, str]:
    s = uuid.uuid4().hex[:6]
    org, dev = f"acme{s}", f"dev{s}"
    admin_cli(refusal_server, "create-org", org)
    admin_cli(refusal_server, "create-user", dev, "--password-stdin", stdin=PASSWORD + "\n")
    with httpx.Client(base_url=refusal_server.url, auth=("admin", ADMIN_PASSWORD)) as c:
        repo = f"{org}/app"
        assert put_manifest(c, repo, "0", image_manifest(c, repo)).status_code == 201
    admin_cli(refusal_server, "grant", "read", f"{org}/app", "--user", dev)
    return {"org": org, "dev": dev, "s": s}


def test_a_refused_skopeo_push_is_audited(
    refusal_server: MoorageServer, setup: dict[str, str], tmp_path: Path
) -> None:
    binary = shutil.which("skopeo")
    if not binary:
        pytest.skip("skopeo is not installed")
    org, dev = setup["org"], setup["dev"]
    layout = tmp_path / "img"
    write_layout(layout, {"1": make_image()})
    res = subprocess.run(
        [
            binary,
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{dev}:{PASSWORD}",
            f"oci:{layout}:1",
            f"docker://{refusal_server.host}/{org}/app:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode != 0, res.stdout
    # The token request: what was asked, what was granted, and that it was only in part.
    tokens = wait_for(
        refusal_server,
        lambda rs: any(r["actor"] == dev and r["result"] == "partial" for r in rs),
        action="token.issue",
    )
    mine = [r for r in tokens if r["actor"] == dev and r["result"] == "partial"]
    assert mine, tokens
    assert f"repository:{org}/app:pull,push" in mine[0]["details"]["requested"]
    assert mine[0]["details"]["scopes"] == [f"repository:{org}/app:pull"]
    # The refused push requests themselves, under dev's name.
    refused = wait_for(
        refusal_server,
        lambda rs: any(r["action"] == "blob.push" for r in rs),
        repository=f"{org}/app",
        result="denied",
    )
    pushes = [r for r in refused if r["action"] == "blob.push"]
    assert pushes, refused
    assert all(r["actor"] == dev and r["actor_type"] == "user" for r in pushes)
    assert pushes[0]["details"]["status"] == 403 and pushes[0]["details"]["count"] == 1
    # Nothing was granted at all: denied.
    r = httpx.get(
        f"{refusal_server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{org}/secret:push"},
        auth=(dev, PASSWORD),
    )
    assert r.status_code == 200
    denied = wait_for(
        refusal_server,
        lambda rs: any(r["result"] == "denied" and r["actor"] == dev for r in rs),
        action="token.issue",
    )
    got = [r for r in denied if r["result"] == "denied" and r["actor"] == dev]
    assert got and got[0]["details"]["scopes"] == []
    assert got[0]["details"]["requested"] == [f"repository:{org}/secret:push"]
    assert moorage_cli(refusal_server, "audit", "verify").returncode == 0


def test_hammering_is_aggregated_head_included(
    refusal_server: MoorageServer, setup: dict[str, str]
) -> None:
    org, dev = setup["org"], setup["dev"]
    repo = f"{org}/hammer{uuid.uuid4().hex[:4]}"
    started = time.monotonic()
    with httpx.Client(base_url=refusal_server.url, auth=(dev, PASSWORD)) as c:
        for _ in range(60):
            assert c.head(f"/v2/{repo}/manifests/latest").status_code == 403
    with httpx.Client(base_url=refusal_server.url) as anon:
        for _ in range(20):
            assert anon.put(f"/v2/{repo}/manifests/x", content=b"{}").status_code == 401
    # Per key and 1-second window: at most the window's first record and its aggregate.
    windows = math.ceil(time.monotonic() - started) + 1
    records = wait_for(refusal_server, lambda rs: count(rs) >= 80, repository=repo)
    heads = [r for r in records if r["action"] == "manifest.pull"]
    anon_puts = [r for r in records if r["action"] == "manifest.push"]
    assert count(heads) == 60 and count(anon_puts) == 20, records
    assert len(records) <= min(2 * 2 * windows, 79), f"{len(records)} records, {windows} s"
    assert any(r["details"].get("aggregated") for r in records)
    assert all(r["actor"] == dev and r["details"]["method"] == "HEAD" for r in heads)
    assert all(r["actor"] == "anonymous" and r["details"]["status"] == 401 for r in anon_puts)
    assert all(r["result"] == "denied" for r in records)
    assert moorage_cli(refusal_server, "audit", "verify").returncode == 0


def test_management_side_gaps(refusal_server: MoorageServer, setup: dict[str, str]) -> None:
    dev, s = setup["dev"], setup["s"]
    url = refusal_server.url
    # Failed authentication on /api/v1: a Basic guess, a bad personal access token, a bad JWT.
    guess = f"admin{s}"
    assert httpx.get(f"{url}/api/v1/user", auth=(guess, "wrong")).status_code == 401
    bad_pat = {"Authorization": "Bearer mrg_pat_" + "x" * 40}
    assert httpx.get(f"{url}/api/v1/user", headers=bad_pat).status_code == 401
    bad_jwt = {"Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}
    assert httpx.get(f"{url}/api/v1/repositories", headers=bad_jwt).status_code == 401
    # A failed Basic login on /v2.
    v2_guess = f"ci{s}"
    assert httpx.get(f"{url}/v2/", auth=(v2_guess, "wrong")).status_code == 401
    failed = wait_for(
        refusal_server,
        lambda rs: (
            sum(1 for r in rs if r["details"].get("attempted_actor") == guess) >= 1
            and sum(1 for r in rs if r["details"].get("scheme") == "bearer") >= 2
            and any(r["details"].get("attempted_actor") == v2_guess for r in rs)
        ),
        action="login.failed",
    )
    api_guess = [r for r in failed if r["details"].get("attempted_actor") == guess]
    assert api_guess and api_guess[0]["details"]["via"] == "api"
    assert [r for r in failed if r["details"].get("attempted_actor") == v2_guess]
    assert sum(1 for r in failed if r["details"].get("scheme") == "bearer") >= 2
    # What outsiders typed never lands in actor.
    assert not export(refusal_server, actor=guess) and not export(refusal_server, actor=v2_guess)
    assert all(r["actor"] == "" and r["actor_type"] == "anonymous" for r in failed)
    # A denied management operation, under the caller's name.
    with httpx.Client(base_url=url, auth=(dev, PASSWORD)) as c:
        assert c.get("/api/v1/users").status_code == 403
    denied = wait_for(
        refusal_server,
        lambda rs: any(r["actor"] == dev for r in rs),
        action="api.list_users",
    )
    assert [r for r in denied if r["actor"] == dev and r["result"] == "denied"], denied
    # Throttled logins (429): recorded, with the name tried.
    victim = f"victim{s}"
    admin_cli(refusal_server, "create-user", victim, "--password-stdin", stdin=PASSWORD + "\n")
    statuses = [httpx.get(f"{url}/v2/", auth=(victim, "wrong")).status_code for _ in range(6)]
    assert 429 in statuses, statuses
    # The first refusal of a window is written at once, the rest when the window (1 s) ends.
    throttled = wait_for(
        refusal_server,
        lambda rs: count([r for r in rs if r["details"].get("attempted_actor") == victim])
        >= statuses.count(429),
        action="login.throttled",
    )
    mine = [r for r in throttled if r["details"].get("attempted_actor") == victim]
    assert mine and count(mine) == statuses.count(429)
    assert mine[0]["actor"] == "" and mine[0]["result"] == "denied"
    # An authenticated /v2 request that fails validation before the policy check: its actor.
    with httpx.Client(base_url=url, auth=(dev, PASSWORD)) as c:
        r = c.put(
            f"/v2/{dev}/app/manifests/v1",
            content=b"not json",
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 400, r.text
    invalid = wait_for(refusal_server, lambda rs: len(rs) > 0, repository=f"{dev}/app")
    assert invalid and all(r["actor"] == dev for r in invalid), invalid
    assert moorage_cli(refusal_server, "audit", "verify").returncode == 0
