"""Geo-replication between two Moorage sites, each with its own database and store: pushes and
deletes flow both ways without loops, users, teams and permissions follow, and a site that was
down catches up when it returns while the other keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MoorageServer

from .images import Pusher
from .sites import ADMIN, QUICK_JOBS, api, cli, executions, ok, site, until, wait_execution
from .test_policies import _image

GEO = ("geo", "geo-replication-account-password")


def _moorage(server: MoorageServer, *args: str, stdin: str | None = None) -> str:
    env = dict(os.environ)
    env.update(QUICK_JOBS)
    r = subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(server.data_dir)],
        input=stdin, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[MoorageServer, MoorageServer]]:
    with site("geo-a") as a, site("geo-b") as b:
        for here, there, name in ((a, b, "site-b"), (b, a, "site-a")):
            _moorage(here, "admin", "create-user", GEO[0], "--admin", "--password-stdin", stdin=GEO[1] + "\n")  # fmt: skip
            ok(cli(here, "add-remote", name, there.url, "--username", GEO[0], "--password-stdin", "--site", stdin=GEO[1] + "\n"))  # fmt: skip
            ok(cli(here, "add-policy", f"geo-{name}", "--remote", name, "--direction", "push", "--source", "**", "--trigger", "event", "--replicate-deletes"))  # fmt: skip
        for here, name in ((a, "site-b"), (b, "site-a")):
            assert ok(cli(here, "check-remote", name)).startswith("ok\t")
        yield a, b


def _digest(server: MoorageServer, repo: str, tag: str) -> str | None:
    r = Pusher(server.url, ADMIN).get(repo, tag)
    return r.headers.get("docker-content-digest") if r.status_code == 200 else None


def _tasks(server: MoorageServer, policy: str) -> list[tuple[str, str, str]]:
    out = []
    with api(server) as c:
        for e in executions(server, policy):
            doc = c.get(f"/replication/executions/{e['id']}").json()
            out += [(t["operation"], t["src_repo"], t["ref"]) for t in doc["tasks"]]
    return out


def test_pushes_and_deletes_flow_both_ways_without_loops(
    sites: tuple[MoorageServer, MoorageServer], uid: str
) -> None:
    a, b = sites
    one, two = _image("one"), _image("two")
    Pusher(a.url, ADMIN).manifest(f"geo{uid}/app", one)
    Pusher(b.url, ADMIN).manifest(f"geo{uid}/app", two)
    until(lambda: _digest(b, f"geo{uid}/app", "one") == one.digest, 60, "one on B")
    until(lambda: _digest(a, f"geo{uid}/app", "two") == two.digest, 60, "two on A")
    time.sleep(2)  # anything sent back would be queued by now
    # Each site sent its own push once and nothing it received.
    assert [t for t in _tasks(a, "geo-site-b") if t[1] == f"geo{uid}/app"] == [
        ("copy", f"geo{uid}/app", "one")
    ]
    assert [t for t in _tasks(b, "geo-site-a") if t[1] == f"geo{uid}/app"] == [
        ("copy", f"geo{uid}/app", "two")
    ]
    # A delete on B reaches A, and is not sent back either.
    r = Pusher(b.url, ADMIN).http.delete(f"/v2/geo{uid}/app/manifests/one")
    assert r.status_code == 202, r.text
    until(lambda: _digest(a, f"geo{uid}/app", "one") is None, 60, "one deleted on A")
    assert _digest(a, f"geo{uid}/app", "two") == two.digest
    time.sleep(2)
    assert ("delete", f"geo{uid}/app", "one") not in _tasks(a, "geo-site-b")


def test_users_teams_and_permissions_follow(
    sites: tuple[MoorageServer, MoorageServer], uid: str
) -> None:
    a, b = sites
    carol = (f"carol{uid}", "carol-password-123")
    with api(a) as c:
        assert c.post("/users", json={"username": carol[0], "password": carol[1]}).status_code == 201
        assert c.post("/organizations", json={"name": f"org{uid}"}).status_code == 201
        r = c.post(f"/organizations/org{uid}/teams", json={"name": "devs"})
        assert r.status_code == 201, r.text
        assert c.put(f"/organizations/org{uid}/teams/devs/members/{carol[0]}").status_code == 204
        r = c.put(f"/organizations/org{uid}/permissions/teams/devs", json={"role": "write"})
        assert r.status_code == 204, r.text
    dave = (f"dave{uid}", "dave-password-123")
    with api(b) as c:
        assert c.post("/users", json={"username": dave[0], "password": dave[1]}).status_code == 201
    for server in (a, b):  # whichever site initiates the merge
        _moorage(server, "jobs", "run", "replication.identities")

    def can_push(server: MoorageServer, who: tuple[str, str]) -> bool:
        with httpx.Client(base_url=server.url, auth=who, timeout=30) as h:
            if h.get("/v2/").status_code != 200:
                return False
            r = h.post(f"/v2/org{uid}/app/blobs/uploads/")
            return r.status_code == 202

    until(lambda: can_push(b, carol), 60, "carol (team member with write) pushing on B")
    until(lambda: httpx.get(a.url + "/v2/", auth=dave, timeout=30).status_code == 200, 60, "dave on A")  # fmt: skip
    # Revoking on B is replicated to A.
    with api(b) as c:
        r = c.delete(f"/organizations/org{uid}/teams/devs/members/{carol[0]}")
        assert r.status_code == 204, r.text
    for server in (a, b):
        _moorage(server, "jobs", "run", "replication.identities")
    until(lambda: not can_push(a, carol), 60, "carol's write right gone on A")


def test_a_site_that_was_down_catches_up(
    sites: tuple[MoorageServer, MoorageServer], uid: str
) -> None:
    a, b = sites
    b.stop()
    try:
        late = _image("late")
        Pusher(a.url, ADMIN).manifest(f"down{uid}/app", late)  # acknowledged by A
        # A keeps serving it.
        assert _digest(a, f"down{uid}/app", "late") == late.digest

        def failed_for_good() -> bool:
            for e in executions(a, "geo-site-b"):
                with api(a) as c:
                    doc = c.get(f"/replication/executions/{e['id']}").json()
                for t in doc["tasks"]:
                    if t["src_repo"] == f"down{uid}/app" and t["state"] == "failed":
                        return True
            return False

        until(failed_for_good, 240, "the event task to give up while B is down")
    finally:
        b.start()
    # B is back: the catch-up job (every minute; run now) copies what it missed.
    _moorage(a, "jobs", "run", "replication.catchup")
    until(lambda: _digest(b, f"down{uid}/app", "late") == late.digest, 120, "late on B")
    kinds = [e["trigger"] for e in executions(a, "geo-site-b")]
    assert "catch-up" in kinds
    catchup = next(e for e in executions(a, "geo-site-b") if e["trigger"] == "catch-up")
    assert wait_execution(a, catchup["id"])["state"] == "succeeded"
