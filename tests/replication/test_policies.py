"""The replication capability end to end: ``moorage serve`` sites running policies as jobs
against real peers (CNCF Distribution 2.8.2, a second Moorage), driven with the contract's
``moorage replication`` commands, the REST API and the UI."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clients.ocigen import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    canonical_json,
    make_image,
)
from tests.conftest import MoorageServer, postgres_database

from .faultproxy import Rule, fault_proxy
from .images import ImageSet, Manifest, Pusher, build_set, referrers_tag
from .peers import Distribution
from .sites import ADMIN, api, cli, executions, ok, site, until, wait_execution

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def site_a() -> Iterator[MoorageServer]:
    with site("a") as srv:
        yield srv


@pytest.fixture(scope="module")
def site_b() -> Iterator[MoorageServer]:
    with site("b") as srv:
        yield srv


def _check_set(peer: Pusher, repo: str, s: ImageSet, *, referrers_tag_expected: bool) -> None:
    for tag, digest in s.tags.items():
        r = peer.get(repo, tag)
        assert r.status_code == 200, (repo, tag, r.text)
        assert r.headers["docker-content-digest"] == digest
    for digest in (*s.children.values(), s.sbom, s.sbom_signature, s.child_sbom):
        assert peer.get(repo, digest).status_code == 200, digest
    if referrers_tag_expected:
        assert peer.get(repo, referrers_tag(s.index.digest)).status_code == 200


def _image(tag: str, layers: list[Blob] | None = None) -> Manifest:
    img = make_image("amd64", label=tag, n_layers=1, layer_size=2048)
    blobs = [img.config, *(layers or img.layers)]
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": img.config.descriptor(),
        "layers": [b.descriptor() for b in blobs[1:]],
    }
    return Manifest(Blob(OCI_MANIFEST, canonical_json(doc)), tag, blobs)


def test_push_policy_to_distribution_with_the_contract_commands(
    site_a: MoorageServer, dist_a: Distribution, uid: str
) -> None:
    s = build_set(f"{site_a.host}/acme{uid}/app")
    Pusher(site_a.url, ADMIN).push_set(f"acme{uid}/app", s)
    ok(cli(site_a, "add-remote", f"dist{uid}", dist_a.url))
    assert ok(cli(site_a, "check-remote", f"dist{uid}")).startswith("ok\t")
    out = ok(
        cli(
            site_a, "add-policy", f"p{uid}", "--remote", f"dist{uid}", "--direction", "push",
            "--source", f"acme{uid}/*", "--tags", "{multi,single,docker}", "--exclude", "dock*",
            "--dest-namespace", f"mirror{uid}", "--trigger", "manual",
        )
    )  # fmt: skip
    assert "triggers manual" in out
    r = cli(site_a, "run", f"p{uid}", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    # One line per tag with its outcome (docker excluded), then the summary.
    assert sorted(line.split("\t")[1] for line in lines[:-1]) == [
        f"acme{uid}/app:multi -> mirror{uid}/app",
        f"acme{uid}/app:single -> mirror{uid}/app",
    ]
    assert all(line.startswith("copied\t") for line in lines[:-1])
    assert "succeeded, 2 of 2 succeeded" in lines[-1]
    dist = Pusher(dist_a.url)
    assert dist.get(f"mirror{uid}/app", "docker").status_code == 404
    assert dist.get(f"mirror{uid}/app", "multi").headers["docker-content-digest"] == s.tags["multi"]
    # The signature tag and the SBOM referrers came along with their subject.
    assert dist.get(f"mirror{uid}/app", s.signature_tag).status_code == 200
    assert dist.get(f"mirror{uid}/app", referrers_tag(s.index.digest)).status_code == 200
    assert dist.get(f"mirror{uid}/app", s.sbom_signature).status_code == 200
    # A second run finds everything there: unchanged, no bytes.
    r = cli(site_a, "run", f"p{uid}", "--wait")
    assert r.returncode == 0 and r.stdout.count("unchanged\t") == 2, r.stdout
    # History: CLI, API, UI, audit.
    hist = ok(cli(site_a, "executions", f"p{uid}")).strip().splitlines()
    assert len(hist) == 2 and all("\tsucceeded\t" in h for h in hist)
    items = executions(site_a, f"p{uid}")
    assert [e["state"] for e in items] == ["succeeded", "succeeded"]
    with api(site_a) as c:
        first = c.get(f"/replication/executions/{items[-1]['id']}").json()
        assert {t["outcome"] for t in first["tasks"]} == {"copied"}
        assert all(t["bytes"] > 0 and t["duration"] > 0 for t in first["tasks"])
        audit = c.get("/audit", params={"action": "replication.execution"}).json()
        assert any(ev["details"].get("policy") == f"p{uid}" for ev in audit["events"])
    assert "repositories" in ok(cli(site_a, "policies")) or f"p{uid}" in ok(cli(site_a, "policies"))


def test_api_and_ui_manage_and_show_policies(
    site_a: MoorageServer, dist_b: Distribution, uid: str
) -> None:
    Pusher(site_a.url, ADMIN).manifest(f"ui{uid}/app", _image("v1"))
    with api(site_a) as c:
        r = c.post("/replication/remotes", json={"name": f"ui{uid}", "url": dist_b.url})
        assert r.status_code == 201, r.text
        assert c.post(f"/replication/remotes/ui{uid}/check").json()["ok"] is True
        body = {
            "name": f"ui{uid}", "remote": f"ui{uid}", "direction": "push",
            "source": f"ui{uid}/**", "triggers": ["manual", "cron:*/5 * * * *"],
        }  # fmt: skip
        r = c.post("/replication/policies", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["triggers"] == ["manual", "cron:*/5 * * * *"]
        bad = c.post("/replication/policies", json={**body, "name": "x", "triggers": ["cron:nope"]})
        assert bad.status_code == 422 and "cron" in bad.json()["error"]["message"]
        bad = c.post("/replication/policies", json={**body, "name": "y", "source": "{a"})
        assert bad.status_code == 422
        run = c.post(f"/replication/policies/ui{uid}/run")
        assert run.status_code == 202, run.text
        done = wait_execution(site_a, run.json()["execution"])
        assert done["state"] == "succeeded" and done["tasks"][0]["outcome"] == "copied"
        # A remote with credentials and no key-encryption secret would be refused; with the
        # secret the password is stored sealed, never shown.
        r = c.post(
            "/replication/remotes",
            json={"name": f"cred{uid}", "url": dist_b.url, "username": "u", "password": "p4ss"},
        )
        assert r.status_code == 201 and r.json()["has_password"] is True
        assert "p4ss" not in json.dumps(c.get("/replication/remotes").json())
        openapi = c.get("/openapi.json").json()
        assert "/replication/policies/{policy}/run" in openapi["paths"]
    # The UI: sign in, the replication pages list the policy and the execution's tags.
    with httpx.Client(base_url=site_a.url, timeout=30) as ui:
        page = ui.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        ui.post("/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token})
        overview = ui.get("/ui/replication")
        assert overview.status_code == 200 and f"ui{uid}" in overview.text
        policy = ui.get(f"/ui/replication/policies/ui{uid}")
        assert f"/ui/replication/executions/{done['id']}" in policy.text
        execution = ui.get(f"/ui/replication/executions/{done['id']}")
        assert execution.status_code == 200 and f"ui{uid}/app:v1" in execution.text


def test_pull_policy_with_a_platform_filter_keeps_a_sparse_index(
    site_a: MoorageServer, dist_a: Distribution, uid: str
) -> None:
    s = build_set()
    Pusher(dist_a.url).push_set(f"up{uid}/app", s)
    ok(cli(site_a, "add-remote", f"up{uid}", dist_a.url))
    ok(
        cli(
            site_a, "add-policy", f"pull{uid}", "--remote", f"up{uid}", "--direction", "pull",
            "--source", f"up{uid}/app", "--tags", "multi", "--dest-namespace", f"cache{uid}",
            "--platform", "linux/amd64",
        )
    )  # fmt: skip
    r = cli(site_a, "run", f"pull{uid}", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    here = Pusher(site_a.url, ADMIN)
    repo = f"cache{uid}/app"
    got = here.get(repo, "multi")
    assert got.status_code == 200 and got.headers["docker-content-digest"] == s.tags["multi"]
    assert got.content == s.index.data  # the index byte for byte
    assert here.get(repo, s.children["linux/amd64"]).status_code == 200
    assert here.get(repo, s.children["attestation"]).status_code == 200
    missing = here.get(repo, s.children["linux/arm64/v8"])
    assert missing.status_code == 404
    message = missing.json()["errors"][0]["message"]
    assert "left out" in message and s.index.digest in message
    # The SBOM referrer of the index came along (Moorage indexes it: referrers API).
    refs = here.http.get(f"/v2/{repo}/referrers/{s.index.digest}").json()
    assert s.sbom in {m["digest"] for m in refs["manifests"]}
    # Anyone else pushing an index without its children is still refused.
    r = here.http.put(
        f"/v2/other{uid}/app/manifests/multi",
        content=s.index.data,
        headers={"Content-Type": s.index.media_type},
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


def _forty(uid: str) -> tuple[dict[str, list[Manifest]], ImageSet]:
    """40 tags: an index with signatures and an SBOM (build_set's three tags) and 37 images over
    4 repositories sharing a base layer."""
    base = Blob(OCI_LAYER_GZIP, os.urandom(256 * 1024))
    repos: dict[str, list[Manifest]] = {f"set{uid}/r{i}": [] for i in range(4)}
    names = list(repos)
    for n in range(37):
        repos[names[n % 4]].append(_image(f"v{n}", [base, Blob(OCI_LAYER_GZIP, os.urandom(20_000))]))
    return repos, build_set()


def _storage_path(server: MoorageServer, digest: str) -> Path:
    hexa = digest.split(":", 1)[1]
    return server.data_dir / "storage" / "blobs" / "sha256" / hexa[:2] / hexa


@pytest.mark.parametrize("target", ["distribution", "moorage"])
def test_forty_images_one_failing_tag_leaves_the_others_replicated(
    target: str, site_a: MoorageServer, site_b: MoorageServer, dist_b: Distribution, uid: str
) -> None:
    repos, s = _forty(uid)
    push = Pusher(site_a.url, ADMIN)
    for repo, items in repos.items():
        for m in items:
            push.manifest(repo, m)
    push.push_set(f"set{uid}/multi", s)
    # One image's layer is damaged in the store: its tag fails for good, at once.
    broken = repos[f"set{uid}/r1"][3]
    _storage_path(site_a, broken.blobs[2].digest).write_bytes(os.urandom(20_000))
    if target == "distribution":
        ok(cli(site_a, "add-remote", f"t{uid}", dist_b.url))
        peer, referrers_tag_expected = Pusher(dist_b.url), True
    else:
        ok(cli(site_a, "add-remote", f"t{uid}", site_b.url, "--username", "admin", "--password-stdin", stdin=ADMIN[1] + "\n"))  # fmt: skip
        peer, referrers_tag_expected = Pusher(site_b.url, ADMIN), False
    ok(cli(site_a, "add-policy", f"forty{uid}", "--remote", f"t{uid}", "--direction", "push", "--source", f"set{uid}/**"))  # fmt: skip
    r = cli(site_a, "run", f"forty{uid}", "--wait")
    assert r.returncode == 1, r.stdout + r.stderr  # not every tag succeeded
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 41
    failed = [line for line in lines[:-1] if line.startswith("failed\t")]
    assert len(failed) == 1 and f"set{uid}/r1:{broken.ref}" in failed[0]
    assert "digest" in failed[0]
    assert "partial, 39 of 40 succeeded, 1 failed" in lines[-1]
    for repo, items in repos.items():
        for m in items:
            got = peer.get(repo, m.ref)
            if m is broken:
                assert got.status_code == 404
            else:
                assert got.headers.get("docker-content-digest") == m.digest, (repo, m.ref)
    _check_set(peer, f"set{uid}/multi", s, referrers_tag_expected=referrers_tag_expected)
    if target == "moorage":
        refs = peer.http.get(f"/v2/set{uid}/multi/referrers/{s.index.digest}").json()
        assert s.sbom in {m["digest"] for m in refs["manifests"]}
    e = executions(site_a, f"forty{uid}")[0]
    assert (e["state"], e["total"], e["succeeded"], e["failed"]) == ("partial", 40, 39, 1)
    with api(site_a) as c:
        tasks = c.get(f"/replication/executions/{e['id']}").json()["tasks"]
    bad = [t for t in tasks if t["state"] == "failed"]
    assert len(bad) == 1 and bad[0]["attempts"] == 1 and "digest" in bad[0]["error"]


def test_a_cut_mid_layer_resumes_and_completes(
    site_a: MoorageServer, site_b: MoorageServer, uid: str
) -> None:
    size = 80 * MiB
    layer = Blob(OCI_LAYER_GZIP, os.urandom(size))
    config = Blob(OCI_CONFIG, canonical_json({"os": "linux", "architecture": "amd64", "u": uid}))
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": [layer.descriptor()]}  # fmt: skip
    big = Manifest(Blob(OCI_MANIFEST, canonical_json(doc)), "big", [config, layer])
    Pusher(site_a.url, ADMIN).manifest(f"big{uid}/app", big)
    with fault_proxy(site_b.port) as proxy:
        # The first 64 MiB PATCH of the layer breaks after 30 MiB.
        rule = Rule("PATCH", r"/blobs/uploads/", cut_request_after=30 * MiB)
        proxy.rules.append(rule)
        ok(cli(site_a, "add-remote", f"cut{uid}", proxy.url, "--username", "admin", "--password-stdin", stdin=ADMIN[1] + "\n"))  # fmt: skip
        ok(cli(site_a, "add-policy", f"cut{uid}", "--remote", f"cut{uid}", "--direction", "push", "--source", f"big{uid}/app"))  # fmt: skip
        r = cli(site_a, "run", f"cut{uid}", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rule.fired == 1
    e = executions(site_a, f"cut{uid}")[0]
    with api(site_a) as c:
        (task,) = c.get(f"/replication/executions/{e['id']}").json()["tasks"]
    assert task["outcome"] == "copied"
    assert task["detail"]["resumes"] == 1 and task["detail"]["restarts"] == 0
    assert task["bytes"] < size + 40 * MiB  # went on from the acknowledged offset
    assert Pusher(site_b.url, ADMIN).blob_digest(f"big{uid}/app", layer.digest) == layer.digest


def test_a_node_killed_mid_execution_is_finished_by_another(
    site_b: MoorageServer, uid: str
) -> None:
    """Two nodes share one PostgreSQL database and one store; the node running a slow
    (bandwidth-limited) tag is SIGKILLed; the other re-runs its job from the checkpoint."""
    with postgres_database() as db:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="moorage-nodes-") as tmp:
            store = str(Path(tmp) / "store")
            env = {"MOORAGE_STORAGE_FILESYSTEM_ROOT": store}
            with site("n1", database_url=db, **env) as n1:
                size = 24 * MiB
                layer = Blob(OCI_LAYER_GZIP, os.urandom(size))
                img = _image("slow", [layer])
                push = Pusher(n1.url, ADMIN)
                push.manifest(f"kill{uid}/app", img)
                for n in range(3):
                    push.manifest(f"kill{uid}/app", _image(f"small{n}"))
                ok(cli(n1, "add-remote", f"b{uid}", site_b.url, "--username", "admin", "--password-stdin", stdin=ADMIN[1] + "\n"))  # fmt: skip
                ok(cli(n1, "add-policy", f"kill{uid}", "--remote", f"b{uid}", "--direction", "push", "--source", f"kill{uid}/app", "--bandwidth-limit", str(3 * MiB)))  # fmt: skip
                execution = int(
                    ok(cli(n1, "run", f"kill{uid}")).split()[1]
                )  # "execution N of ... queued"

                def slow_task_underway() -> bool:
                    with api(n1) as c:
                        doc = c.get(f"/replication/executions/{execution}").json()
                        jobs = c.get("/jobs", params={"kind": "replication.tag", "state": "running"}).json()
                    slow = [t for t in doc["tasks"] if t["ref"] == "slow"]
                    progressed = any(
                        (j.get("progress") or {}).get("message", "").startswith(f"kill{uid}/app:slow")
                        and " 0.0 MB" not in j["progress"]["message"]
                        for j in jobs["items"]
                    )
                    return bool(slow and slow[0]["state"] == "running" and progressed)

                until(slow_task_underway, 60, "the slow tag to be under way")
                time.sleep(2)  # a checkpoint with the upload session is written (once a second)
                assert n1.proc is not None
                n1.proc.send_signal(signal.SIGKILL)
                n1.proc.wait(10)
                n1.proc = None
                with site("n2", database_url=db, **env) as n2:
                    done = wait_execution(n2, execution, 180)
                    assert done["state"] == "succeeded", json.dumps(done, indent=1)
                    (slow,) = [t for t in done["tasks"] if t["ref"] == "slow"]
                    assert slow["attempts"] >= 2
                    # The second node went on with the upload session the first had opened.
                    assert slow["detail"]["resumes"] >= 1, slow
                    assert slow["bytes"] < size
                    assert Pusher(site_b.url, ADMIN).get(f"kill{uid}/app", "slow").headers[
                        "docker-content-digest"
                    ] == img.digest
