"""Retention policies through a real server: ``moorage retention set|show|clear|run`` while it
runs, each rule, their precedence (any keep rule keeps; immutable tags are spared; a repository's
policy replaces its organization's), a dry run that lists exactly what the run then removes,
every removal audited, and the scheduled ``retention.run`` job."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from moorage.lifecycle import retention as ret
from moorage.services.errors import Invalid

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    put_manifest,
    sha256,
)
from .conftest import cli, gc_server

PASSWORD = "retention-test-password-1"
REMOVAL = re.compile(r"^(?:would remove|removed) (tag|manifest) (\S+)", re.M)


def removals(out: str) -> list[str]:
    return [m.group(2) for m in REMOVAL.finditer(out)]


def ok(r: object) -> str:
    assert getattr(r, "returncode", 1) == 0, getattr(r, "stderr", r)
    return str(getattr(r, "stdout", ""))


def tags_of(c: httpx.Client, repo: str) -> set[str]:
    r = c.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200, r.text
    return set(r.json().get("tags") or [])


def push_tags(c: httpx.Client, repo: str, *names: str) -> dict[str, bytes]:
    """Each tag its own manifest, pushed in the order given (oldest first)."""
    out = {}
    for name in names:
        m = image_manifest(c, repo)
        assert put_manifest(c, repo, name, m).status_code == 201
        out[name] = m
    return out


def plan(server: MoorageServer, target: str, now: datetime | None = None) -> ret.Plan:
    """The plan of *target*'s stored policy, read from the server's database (``now`` may be
    in the future, to age what is there)."""
    from moorage.db.engine import create_engine

    url = server.database_url or f"sqlite:///{server.data_dir / 'moorage.db'}"

    async def go() -> ret.Plan:
        engine = create_engine(url, 1)
        try:
            async with engine.connect() as conn:
                scope, name = ret.parse_target(target)
                stored = await ret.get_policy(conn, scope, name)
                assert stored is not None
                return await ret.make_plan(conn, scope, name, stored.policy, now)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def org(auth_gc: MoorageServer) -> str:
    name = f"ret{uuid.uuid4().hex[:8]}"
    admin_cli(auth_gc, "create-org", name)
    return name


@pytest.fixture
def admin(auth_gc: MoorageServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_gc.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        yield c


# --- rules ------------------------------------------------------------------------------------


def test_rule_syntax_is_parsed_and_written_back_canonically() -> None:
    p = ret.parse_rules(["untagged-after=168h", "keep-tags=v*,release-*,v*", "keep-last=10"])
    assert p.rules() == ["keep-last=10", "keep-tags=v*,release-*", "untagged-after=7d"]
    assert ret.parse_rules(["keep-last=3 keep-pulled-within=90m"]).rules() == [
        "keep-last=3",
        "keep-pulled-within=90m",
    ]
    assert not ret.parse_rules(["untagged-after=1d"]).has_keep_rules
    for bad in (
        [],
        ["keep-last=-1"],
        ["keep-last=ten"],
        ["keep-last=1", "keep-last=2"],
        ["keep-pulled-within=30"],
        ["keep-pulled-within=3w"],
        ["keep-tags="],
        ["keep-tags=a/b"],
        ["delete-all=yes"],
        ["keep-last"],
    ):
        with pytest.raises(Invalid):
            ret.parse_rules(bad)


# --- each rule, through the CLI while the server runs -----------------------------------------


def test_keep_last_keeps_the_most_recently_pushed(auth_gc: MoorageServer, admin: httpx.Client, org: str) -> None:
    repo = f"{org}/app"
    push_tags(admin, repo, "t1", "t2", "t3", "t4", "t5")
    # t2 pushed again (another manifest): now the most recent
    assert put_manifest(admin, repo, "t2", image_manifest(admin, repo)).status_code == 201
    ok(cli(auth_gc, "retention", "set", repo, "keep-last=2"))
    dry = ok(cli(auth_gc, "retention", "run", repo, "--dry-run"))
    assert sorted(removals(dry)) == [f"{repo}:t1", f"{repo}:t3", f"{repo}:t4"], dry
    assert tags_of(admin, repo) == {"t1", "t2", "t3", "t4", "t5"}  # a dry run changes nothing
    real = ok(cli(auth_gc, "retention", "run", repo))
    assert removals(real) == removals(dry)
    assert tags_of(admin, repo) == {"t2", "t5"}


def test_keep_tags_by_pattern(auth_gc: MoorageServer, admin: httpx.Client, org: str) -> None:
    repo = f"{org}/app"
    push_tags(admin, repo, "v1.0", "release-3", "dev-1", "latest", "v2.0")
    ok(cli(auth_gc, "retention", "set", org, "keep-tags=v*,release-*"))
    real = ok(cli(auth_gc, "retention", "run", org))
    assert sorted(removals(real)) == [f"{repo}:dev-1", f"{repo}:latest"], real
    assert tags_of(admin, repo) == {"v1.0", "v2.0", "release-3"}


def test_keep_pulled_within(auth_gc: MoorageServer, admin: httpx.Client, org: str) -> None:
    repo = f"{org}/app"
    pushed = push_tags(admin, repo, "pulled", "idle")
    assert admin.get(f"/v2/{repo}/manifests/pulled").status_code == 200
    ok(cli(auth_gc, "retention", "set", repo, "keep-pulled-within=1d"))
    # The pull reaches the clock with the audit log's next batch.
    deadline = time.monotonic() + 30
    while True:
        dry = ok(cli(auth_gc, "retention", "run", repo, "--dry-run"))
        if removals(dry) == [f"{repo}:idle"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert removals(dry) == [f"{repo}:idle"], dry
    # A day and a bit later, the pull no longer keeps it.
    later = plan(auth_gc, repo, datetime.now(UTC) + timedelta(days=1, minutes=1))
    assert [r.label() for r in later.tags] == [f"{repo}:idle", f"{repo}:pulled"]
    ok(cli(auth_gc, "retention", "run", repo))
    assert tags_of(admin, repo) == {"pulled"}
    assert admin.get(f"/v2/{repo}/manifests/{sha256(pushed['idle'])}").status_code == 200


def test_untagged_after(auth_gc: MoorageServer, admin: httpx.Client, org: str) -> None:
    repo = f"{org}/app"
    loose = image_manifest(admin, repo)
    assert put_manifest(admin, repo, sha256(loose), loose).status_code == 201  # untagged
    child = image_manifest(admin, repo)
    assert put_manifest(admin, repo, sha256(child), child).status_code == 201
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(child),
                    "size": len(child),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    r = put_manifest(admin, repo, "multi", index, "application/vnd.oci.image.index.v1+json")
    assert r.status_code == 201, r.text
    tagged = push_tags(admin, repo, "keep")
    ok(cli(auth_gc, "retention", "set", repo, "untagged-after=7d"))
    assert removals(ok(cli(auth_gc, "retention", "run", repo, "--dry-run"))) == []
    # Eight days on: the loose manifest goes; the index's child and the tags stay.
    later = plan(auth_gc, repo, datetime.now(UTC) + timedelta(days=8))
    assert [r.label() for r in later.removals] == [f"{repo}@{sha256(loose)}"]
    ok(cli(auth_gc, "retention", "set", repo, "untagged-after=0d"))
    real = ok(cli(auth_gc, "retention", "run", repo))
    assert removals(real) == [f"{repo}@{sha256(loose)}"], real
    assert admin.get(f"/v2/{repo}/manifests/{sha256(loose)}").status_code == 404
    assert admin.get(f"/v2/{repo}/manifests/{sha256(child)}").status_code == 200
    assert admin.get(f"/v2/{repo}/manifests/keep").content == tagged["keep"]


# --- precedence, dry run == run, immutability, audit -----------------------------------------


def test_any_keep_rule_keeps_and_immutable_tags_are_spared(
    auth_gc: MoorageServer, admin: httpx.Client, org: str
) -> None:
    a, b = f"{org}/a", f"{org}/b"
    push_tags(admin, a, "v1", "stable", "old-1", "old-2", "pr-7", "newest")
    push_tags(admin, b, "x1", "x2", "x3")
    ok(cli(auth_gc, "admin", "immutable", "add", a, "stable"))
    ok(cli(auth_gc, "retention", "set", org, "keep-last=1", "keep-tags=v*"))
    dry = ok(cli(auth_gc, "retention", "run", org, "--dry-run"))
    assert "spared 1 immutable" in dry, dry
    expected = [f"{a}:old-1", f"{a}:old-2", f"{a}:pr-7", f"{b}:x1", f"{b}:x2"]
    assert sorted(removals(dry)) == expected
    real = ok(cli(auth_gc, "retention", "run", org))
    assert removals(real) == removals(dry)  # exactly what the dry run listed
    assert tags_of(admin, a) == {"v1", "stable", "newest"}
    assert tags_of(admin, b) == {"x3"}
    # A second run has nothing left to do.
    assert removals(ok(cli(auth_gc, "retention", "run", org, "--dry-run"))) == []

    # Every removal is in the audit log, naming the policy.
    r = admin.get("/api/v1/audit", params={"action": "retention.delete", "limit": 100})
    assert r.status_code == 200, r.text
    audited = {
        f"{e['repository']}:{e['tag']}"
        for e in r.json()["events"]
        if (e.get("repository") or "").startswith(org + "/")
    }
    assert audited == set(expected)


def test_a_repository_policy_replaces_the_organization_policy(
    auth_gc: MoorageServer, admin: httpx.Client, org: str
) -> None:
    a, b = f"{org}/a", f"{org}/b"
    push_tags(admin, a, "a1", "a2", "a3")
    push_tags(admin, b, "b1", "b2", "b3")
    ok(cli(auth_gc, "retention", "set", org, "keep-last=1"))
    ok(cli(auth_gc, "retention", "set", b, "keep-tags=b1"))
    shown = ok(cli(auth_gc, "retention", "show", org))
    assert "keep-last=1" in shown
    assert sorted(removals(ok(cli(auth_gc, "retention", "run", org, "--dry-run")))) == [
        f"{a}:a1",
        f"{a}:a2",
    ]
    assert sorted(removals(ok(cli(auth_gc, "retention", "run", b, "--dry-run")))) == [
        f"{b}:b2",
        f"{b}:b3",
    ]
    # Cleared, the repository falls back to the organization's policy.
    ok(cli(auth_gc, "retention", "clear", b))
    assert sorted(removals(ok(cli(auth_gc, "retention", "run", org, "--dry-run")))) == [
        f"{a}:a1",
        f"{a}:a2",
        f"{b}:b1",
        f"{b}:b2",
    ]
    assert cli(auth_gc, "retention", "run", b, "--dry-run").returncode == 1  # no policy


def test_cli_refuses_bad_input(auth_gc: MoorageServer) -> None:
    r = cli(auth_gc, "retention", "set", "acme", "keep-everything")
    assert r.returncode == 1 and "not a rule" in r.stderr
    r = cli(auth_gc, "retention", "set", "Bad Org!", "keep-last=1")
    assert r.returncode == 1 and "organization" in r.stderr
    r = cli(auth_gc, "retention", "clear", f"nobody{uuid.uuid4().hex[:6]}")
    assert r.returncode == 1 and "no retention policy" in r.stderr


# --- the API ----------------------------------------------------------------------------------


def test_the_api_sets_previews_and_runs(auth_gc: MoorageServer, admin: httpx.Client, org: str) -> None:
    s = uuid.uuid4().hex[:6]
    boss, other = f"boss{s}", f"other{s}"
    for user in (boss, other):
        admin_cli(auth_gc, "create-user", user, "--password-stdin", stdin=PASSWORD + "\n")
    admin_cli(auth_gc, "grant", "admin", org, "--user", boss)
    repo = f"{org}/api"
    push_tags(admin, repo, "one", "two", "three")
    url = f"/api/v1/retention-policies/{org}"
    with (
        httpx.Client(base_url=auth_gc.url, auth=(boss, PASSWORD), timeout=60) as b,
        httpx.Client(base_url=auth_gc.url, auth=(other, PASSWORD), timeout=60) as o,
    ):
        assert o.put(url, json={"rules": ["keep-last=1"]}).status_code == 403
        assert b.get(url).status_code == 404
        bad = b.put(url, json={"rules": ["keep-last=many"]})
        assert bad.status_code in (400, 422) and "keep-last" in bad.text
        assert b.put(url, json={"rules": []}).status_code in (400, 422)
        r = b.put(url, json={"rules": ["keep-last=1"]})
        assert r.status_code == 200, r.text
        assert r.json()["rules"] == ["keep-last=1"] and r.json()["scope"] == "namespace"
        assert b.get(url).json()["updated_by"] == boss
        assert o.get(url).status_code == 403
        assert o.post(url + "/-/runs", json={"dry_run": True}).status_code == 403

        dry = b.post(url + "/-/runs", json={"dry_run": True})
        assert dry.status_code == 200, dry.text
        listed = [(x["repository"], x["tag"]) for x in dry.json()["removed"]]
        assert sorted(listed) == [(repo, "one"), (repo, "two")]
        real = b.post(url + "/-/runs", json={"dry_run": False})
        assert real.status_code == 200, real.text
        assert [(x["repository"], x["tag"]) for x in real.json()["removed"]] == listed
        assert tags_of(admin, repo) == {"three"}
        assert b.get(url).json()["last_run_tags"] == 2

        # A repository's policy, by its name in the path.
        rurl = f"/api/v1/retention-policies/{repo}"
        r = b.put(rurl, json={"rules": ["untagged-after=30d"]})
        assert r.status_code == 200 and r.json()["scope"] == "repository", r.text
        assert admin.get("/api/v1/retention-policies").status_code == 200
        assert b.get("/api/v1/retention-policies").status_code == 403
        assert b.delete(rurl).status_code == 204
        assert b.delete(rurl).status_code == 404
        assert b.get("/api/v1/retention-policies/Bad%20Org").status_code in (400, 404, 422)

    spec = admin.get("/api/v1/openapi.json")
    if spec.status_code == 200:
        ids = [
            op["operationId"]
            for item in spec.json()["paths"].values()
            for op in item.values()
            if isinstance(op, dict) and "operationId" in op
        ]
        assert len(ids) == len(set(ids))
        assert "post_run_retention_policy" in ids


# --- the schedule -----------------------------------------------------------------------------


def test_the_scheduled_job_applies_every_policy(backend: tuple[str, str | None]) -> None:
    with gc_server(
        backend, MOORAGE_GC_ENABLED="false", MOORAGE_RETENTION_INTERVAL_SECONDS="1"
    ) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        repo = f"sched{uuid.uuid4().hex[:6]}/app"
        push_tags(c, repo, "a", "b", "c")
        ok(cli(srv, "retention", "set", repo, "keep-last=1"))
        deadline = time.monotonic() + 60
        while tags_of(c, repo) != {"c"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert tags_of(c, repo) == {"c"}
        shown = ok(cli(srv, "retention", "show", repo))
        assert "last run" in shown, shown
        jobs = ok(cli(srv, "jobs", "list"))
        assert "retention.run" in jobs


# --- a plan is re-checked item by item ---------------------------------------------------------


def test_a_tag_pushed_again_after_the_plan_is_skipped(
    auth_gc: MoorageServer, admin: httpx.Client, org: str
) -> None:
    """The run carries out its plan item by item, each re-checked in its own transaction: a tag
    moved (or pushed again) between the plan and its removal stays; one gone is reported."""
    from moorage.config import load_config
    from moorage.runtime import runtime
    from moorage.services.rules import Requester

    repo = f"{org}/race"
    push_tags(admin, repo, "moved", "gone", "plain", "newest")
    ok(cli(auth_gc, "retention", "set", repo, "keep-last=1"))
    environ = {**auth_gc.env}
    if auth_gc.database_url:
        environ["MOORAGE_DATABASE_URL"] = auth_gc.database_url
    config = load_config(overrides={"data_dir": str(auth_gc.data_dir)}, environ=environ)

    async def make() -> ret.Plan:
        async with runtime(config) as rt:
            return await rt.services[ret.SERVICE].plan("repository", repo)

    async def carry_out(plan: ret.Plan) -> list[str | None]:
        async with runtime(config) as rt:
            service: ret.Retention = rt.services[ret.SERVICE]
            who = Requester.system("test")
            return [await service._remove(item, who) for item in plan.removals]

    plan = asyncio.run(make())
    assert [r.tag for r in plan.removals] == ["gone", "moved", "plain"]
    # Meanwhile: "moved" points elsewhere, "gone" is deleted by someone else.
    assert put_manifest(admin, repo, "moved", image_manifest(admin, repo)).status_code == 201
    assert admin.delete(f"/v2/{repo}/manifests/gone").status_code == 202
    outcome = asyncio.run(carry_out(plan))
    assert outcome == ["tag gone", "tag pushed again since the plan", None]
    assert tags_of(admin, repo) == {"moved", "newest"}
