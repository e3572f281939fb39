"""Replication policies' label and artifact-type filters, and a cron trigger firing by itself,
end to end: a ``moorage serve`` site pushing to CNCF Distribution 2.8.2 and to a second Moorage,
driven with the contract's ``moorage replication`` commands."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.clients.ocigen import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    canonical_json,
    make_image,
)
from tests.conftest import MoorageServer

from .faultproxy import Rule, fault_proxy
from .images import EMPTY, SPDX, Manifest, Pusher
from .peers import Distribution
from .sites import ADMIN, api, cli, executions, ok, site, until, wait_execution

LABEL = "org.example.test"  # make_image puts its ``label`` under this config label


@pytest.fixture(scope="module")
def src_site() -> Iterator[MoorageServer]:
    with site("filters") as srv:
        yield srv


@pytest.fixture(scope="module")
def dst_site() -> Iterator[MoorageServer]:
    with site("filters-dst") as srv:
        yield srv


def _image(tag: str, label: str) -> Manifest:
    img = make_image("amd64", label=label, n_layers=1, layer_size=1024)
    return Manifest(img.manifest, tag, [img.config, *img.layers])


def _sbom(tag: str) -> Manifest:
    """A tagged SBOM artifact (artifactType SPDX, empty config, no subject)."""
    layer = Blob(
        SPDX, canonical_json({"spdxVersion": "SPDX-2.3", "name": tag, "r": os.urandom(8).hex()})
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": EMPTY.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Manifest(Blob(OCI_MANIFEST, canonical_json(doc)), tag, [EMPTY, layer])


def _index(tag: str, child: Manifest, annotations: dict[str, str]) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child.blob.descriptor(platform={"architecture": "amd64", "os": "linux"})],
        "annotations": annotations,
    }
    return Manifest(Blob(OCI_INDEX, canonical_json(doc)), tag, [])


@dataclass
class Content:
    repo: str
    tags: dict[str, Manifest]


def _push_content(server: MoorageServer | str, uid: str) -> Content:
    """``prod`` and ``dev``: images whose config label says so; ``idx``: an index of the dev
    image annotated prod; ``sbom``: an SPDX-typed artifact; ``plain``: an image without the
    test's label value (``other``)."""
    repo = f"filt{uid}/app"
    dev = _image("dev", "dev")
    tags = {
        "prod": _image("prod", "prod"),
        "dev": dev,
        "plain": _image("plain", "other"),
        "sbom": _sbom("sbom"),
    }
    tags["idx"] = _index("idx", dev, {LABEL: "prod"})
    push = Pusher(server) if isinstance(server, str) else Pusher(server.url, ADMIN)
    for m in tags.values():
        push.manifest(repo, m)
    return Content(repo, tags)


def _outcomes(stdout: str) -> dict[str, str]:
    """tag -> outcome from ``run --wait`` lines (``outcome<TAB>repo:tag -> dst<TAB>...``)."""
    out = {}
    for line in stdout.strip().splitlines()[:-1]:
        outcome, what = line.split("\t")[:2]
        out[what.split(" -> ")[0].rsplit(":", 1)[1]] = outcome
    return out


def _check(peer: Pusher, content: Content, dst_repo: str, wanted: set[str], what: str) -> None:
    for tag, m in content.tags.items():
        got = peer.get(dst_repo, tag)
        if tag in wanted:
            assert got.status_code == 200, (what, tag, got.text)
            assert got.headers["docker-content-digest"] == m.digest, (what, tag)
        else:
            assert got.status_code == 404, (what, tag, got.status_code)


def _check_history(
    server: MoorageServer, execution: dict[str, Any], content: Content, wanted: set[str], what: str
) -> None:
    """Every tag planned and reported: copied when selected; skipped, with why and no bytes,
    when a filter left it out; the execution succeeded."""
    every = len(content.tags)
    assert (execution["state"], execution["total"], execution["succeeded"], execution["failed"]) == (
        "succeeded", every, every, 0,
    ), (what, execution)  # fmt: skip
    with api(server) as c:
        tasks = c.get(f"/replication/executions/{execution['id']}").json()["tasks"]
    assert {t["ref"] for t in tasks} == set(content.tags), (what, tasks)
    for t in tasks:
        if t["ref"] in wanted:
            # (No byte count: the blobs may be at the destination from an earlier policy.)
            # A task retried (its first attempt failed after its copy landed, e.g. a timeout
            # on a busy machine) finds the tag there already: unchanged, not copied.
            allowed = ("copied", "unchanged") if t.get("attempts", 1) > 1 else ("copied",)
            assert t["outcome"] in allowed, (what, t)
            assert t["digest"] == content.tags[t["ref"]].digest, (what, t)
        else:
            assert t["outcome"] == "skipped" and t["bytes"] == 0, (what, t)
            assert "label" in t["error"] or "artifact type" in t["error"], (what, t)


@pytest.mark.parametrize("target", ["distribution", "moorage"])
def test_label_and_artifact_type_filters_select_what_reaches_the_target(
    target: str,
    src_site: MoorageServer,
    dst_site: MoorageServer,
    dist_a: Distribution,
    uid: str,
) -> None:
    content = _push_content(src_site, uid)
    remote: dict[str, Any] = {"name": f"r{uid}"}
    if target == "distribution":
        remote["url"] = dist_a.url
        peer = Pusher(dist_a.url)
    else:
        remote.update(url=dst_site.url, username=ADMIN[0], password=ADMIN[1])
        peer = Pusher(dst_site.url, ADMIN)
    with api(src_site) as c:
        r = c.post("/replication/remotes", json=remote)
        assert r.status_code == 201, r.text
    every = set(content.tags)

    # The contract's commands: add-policy --label / --artifact-type, run --wait.
    cli_cases = {
        # KEY=VALUE: the config label (images) or the manifest annotation (the index).
        "lbl": (["--label", f"{LABEL}=prod"], {"prod", "idx"}),
        # Both filters: an image AND labelled dev (the index labelled prod is not an image).
        "both": (["--artifact-type", "image", "--label", f"{LABEL}=dev"], {"dev"}),
    }
    for name, (flags, wanted) in cli_cases.items():
        policy = f"{name}{uid}"
        ok(
            cli(
                src_site, "add-policy", policy, "--remote", f"r{uid}", "--direction", "push",
                "--source", content.repo, "--dest-namespace", policy, *flags,
            )
        )  # fmt: skip
        r = cli(src_site, "run", policy, "--wait")
        assert r.returncode == 0, (name, r.stdout, r.stderr)
        # One line per tag: copied when selected, skipped when filtered out.
        assert _outcomes(r.stdout) == {t: ("copied" if t in wanted else "skipped") for t in every}, (
            name, r.stdout,
        )  # fmt: skip
        summary = r.stdout.strip().splitlines()[-1]
        assert f"succeeded, {len(every)} of {len(every)} succeeded" in summary, summary
        _check(peer, content, f"{policy}/app", wanted, name)
        _check_history(src_site, executions(src_site, policy)[0], content, wanted, name)

    # The same through the API, the runs at once.
    api_cases: dict[str, tuple[dict[str, Any], set[str]]] = {
        # KEY alone ("*"): any value; the SBOM has neither config labels nor annotations.
        "anylbl": ({"labels": {LABEL: "*"}}, {"prod", "dev", "plain", "idx"}),
        "sbom": ({"artifact_types": [SPDX]}, {"sbom"}),
        "img": ({"artifact_types": ["image"]}, {"prod", "dev", "plain"}),
        "idx": ({"artifact_types": ["index", SPDX]}, {"idx", "sbom"}),
        "none": ({"labels": {LABEL: "staging"}}, set()),
    }
    started: dict[str, int] = {}
    with api(src_site) as c:
        for name, (fields, _) in api_cases.items():
            body = {
                "name": f"{name}{uid}", "remote": f"r{uid}", "direction": "push",
                "source": content.repo, "dest_namespace": f"{name}{uid}", **fields,
            }  # fmt: skip
            r = c.post("/replication/policies", json=body)
            assert r.status_code == 201, r.text
        for name in api_cases:
            r = c.post(f"/replication/policies/{name}{uid}/run")
            assert r.status_code == 202, r.text
            started[name] = r.json()["execution"]
    for name, (_, wanted) in api_cases.items():
        done = wait_execution(src_site, started[name])
        _check_history(src_site, done, content, wanted, name)
        _check(peer, content, f"{name}{uid}/app", wanted, name)

    # A second run of a filtered policy: the selected tags are unchanged, the others skipped.
    r = cli(src_site, "run", f"lbl{uid}", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _outcomes(r.stdout) == {
        t: ("unchanged" if t in {"prod", "idx"} else "skipped") for t in every
    }

    if target == "distribution":
        # A pull policy filters what it reads from the remote (config labels fetched there):
        # Distribution's anylbl{uid}/app holds prod, dev, plain and idx.
        with api(src_site) as c:
            body = {
                "name": f"pull{uid}", "remote": f"r{uid}", "direction": "pull",
                "source": f"anylbl{uid}/app", "dest_namespace": f"pulled{uid}",
                "labels": {LABEL: "prod"},
            }  # fmt: skip
            assert c.post("/replication/policies", json=body).status_code == 201
            run = c.post(f"/replication/policies/pull{uid}/run")
            assert run.status_code == 202, run.text
        done = wait_execution(src_site, run.json()["execution"])
        pulled = Content(content.repo, {t: m for t, m in content.tags.items() if t != "sbom"})
        _check_history(src_site, done, pulled, {"prod", "idx"}, "pull")
        _check(Pusher(src_site.url, ADMIN), pulled, f"pulled{uid}/app", {"prod", "idx"}, "pull")


def test_a_filter_that_cannot_read_the_manifest_fails_that_tag_only(
    src_site: MoorageServer, dist_a: Distribution, uid: str
) -> None:
    """The label filter reads each tag's manifest and config at the source before copying: a
    source answering 503 there is retried like a copy, one answering 404 (the tag went away
    after planning) fails that tag at once with a clear error; the other tags are copied."""
    content = _push_content(dist_a.url, uid)
    with fault_proxy(dist_a.port) as proxy:
        gone = Rule("GET", rf"/v2/filt{uid}/app/manifests/dev$", status=404, times=100)
        flaky = Rule("GET", rf"/v2/filt{uid}/app/manifests/prod$", status=503, times=1)
        proxy.rules += [gone, flaky]
        with api(src_site) as c:
            r = c.post("/replication/remotes", json={"name": f"fp{uid}", "url": proxy.url})
            assert r.status_code == 201, r.text
            body = {
                "name": f"fp{uid}", "remote": f"fp{uid}", "direction": "pull",
                "source": content.repo, "dest_namespace": f"fp{uid}", "labels": {LABEL: "*"},
            }  # fmt: skip
            assert c.post("/replication/policies", json=body).status_code == 201
            run = c.post(f"/replication/policies/fp{uid}/run")
            assert run.status_code == 202, run.text
        done = wait_execution(src_site, run.json()["execution"], 90)
    assert flaky.fired == 1 and gone.fired >= 1
    tasks = {t["ref"]: t for t in done["tasks"]}
    assert (done["state"], done["failed"]) == ("partial", 1), done
    assert tasks["dev"]["outcome"] == "failed", tasks["dev"]
    assert tasks["dev"]["attempts"] == 1, json.dumps(tasks["dev"])
    assert "filter" in tasks["dev"]["error"] and "dev" in tasks["dev"]["error"], tasks["dev"]
    assert tasks["prod"]["outcome"] == "copied", tasks["prod"]
    assert tasks["plain"]["outcome"] == "copied" and tasks["idx"]["outcome"] == "copied"
    assert tasks["sbom"]["outcome"] == "skipped"
    here = Pusher(src_site.url, ADMIN)
    assert (
        here.get(f"fp{uid}/app", "prod").headers["docker-content-digest"]
        == content.tags["prod"].digest
    )
    assert here.get(f"fp{uid}/app", "dev").status_code == 404


def test_a_cron_trigger_fires_without_a_manual_run(
    src_site: MoorageServer, dist_a: Distribution, uid: str
) -> None:
    """``--trigger cron:* * * * *``: within the next minute (the cron job's tick is a minute,
    as is cron's granularity) an execution starts by itself and the images arrive."""
    repo = f"cron{uid}/app"
    push = Pusher(src_site.url, ADMIN)
    images = [_image(f"v{n}", f"c{n}") for n in range(3)]
    for m in images:
        push.manifest(repo, m)
    ok(cli(src_site, "add-remote", f"cron{uid}", dist_a.url))
    before = time.time()
    out = ok(
        cli(
            src_site, "add-policy", f"cron{uid}", "--remote", f"cron{uid}", "--direction", "push",
            "--source", repo, "--dest-namespace", f"cronns{uid}", "--trigger", "cron:* * * * *",
        )
    )  # fmt: skip
    created = time.time()
    assert "cron:* * * * *" in out, out
    assert executions(src_site, f"cron{uid}") == []  # nothing ran it by hand
    peer = Pusher(dist_a.url)

    def arrived() -> bool:
        return all(
            peer.get(f"cronns{uid}/app", m.ref).headers.get("docker-content-digest") == m.digest
            for m in images
        )

    # At most a minute to the next firing, a poll period for the tick, seconds to copy.
    until(arrived, 90, "the cron-triggered execution to copy the images")
    items = executions(src_site, f"cron{uid}")
    assert items, "images arrived without an execution"
    first = items[-1]
    assert (first["trigger"], first["triggered_by"]) == ("cron", "cron:* * * * *"), first
    # It started at the first minute boundary after the policy was created (not at creation,
    # not a minute late): the tick runs on the minute.
    at = datetime.fromisoformat(first["created_at"].replace("Z", "+00:00")).timestamp()
    boundary = at - at % 60
    assert before - 1 < boundary <= created + 60, (before, created, first["created_at"])
    assert at - boundary < 15, first["created_at"]
    until(
        lambda: executions(src_site, f"cron{uid}")[-1]["state"] == "succeeded",
        30,
        "the cron execution to finish",
    )
    with api(src_site) as c:
        doc = c.get(f"/replication/executions/{first['id']}").json()
    assert sorted(t["ref"] for t in doc["tasks"]) == ["v0", "v1", "v2"]
    assert {t["outcome"] for t in doc["tasks"]} == {"copied"}
    # One firing, one execution: ticks within the same minute do not start it again.
    if time.time() - boundary < 45:
        time.sleep(2)
        assert len(executions(src_site, f"cron{uid}")) == 1
