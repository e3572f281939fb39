"""/api/v1 repositories, tags, images, referrers: reads, deletes, settings, and who may do what."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.api.conftest import API, World, err, ok
from tests.conftest import image_manifest, put_manifest, sha256


def test_list_search_filter_and_paginate(world: World, admin: httpx.Client) -> None:
    names = ok(admin.get(f"{API}/repositories", params={"namespace": world.org}))
    assert [r["name"] for r in names["items"]] == [world.app, world.pub]
    assert names["next_cursor"] is None
    pub = ok(
        admin.get(f"{API}/repositories", params={"namespace": world.org, "visibility": "public"})
    )
    assert [r["name"] for r in pub["items"]] == [world.pub]
    found = ok(admin.get(f"{API}/repositories", params={"q": f"{world.s}/ap"}))
    assert [r["name"] for r in found["items"]] == [world.app]
    # a LIKE wildcard in q is a literal character
    assert ok(admin.get(f"{API}/repositories", params={"q": f"{world.s}%"}))["items"] == []
    first = admin.get(f"{API}/repositories", params={"namespace": world.org, "limit": 1})
    page1 = ok(first)
    assert [r["name"] for r in page1["items"]] == [world.app]
    assert page1["next_cursor"] and 'rel="next"' in first.headers["link"]
    page2 = ok(
        admin.get(
            f"{API}/repositories",
            params={"namespace": world.org, "limit": 1, "cursor": page1["next_cursor"]},
        )
    )
    assert [r["name"] for r in page2["items"]] == [world.pub] and page2["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"visibility": "secret"}, "visibility"),
        ({"cursor": "not base64!"}, "cursor"),
        ({"q": "x" * 256}, "q"),
        ({"q": "a\x00b"}, "q"),
    ],
)
def test_list_validation(admin: httpx.Client, params: dict[str, str], field: str) -> None:
    err(admin.get(f"{API}/repositories", params=params), 400, field)


def test_listing_shows_what_the_caller_may_pull(world: World) -> None:
    expected = {
        "reader": {world.app, world.pub},
        "teamuser": {world.app, world.pub},
        "outsider": {world.pub},
        "robot": {world.app, world.pub},
    }
    for who, repos in expected.items():
        with world.client(who) as c:
            got = {
                r["name"]
                for r in ok(c.get(f"{API}/repositories", params={"namespace": world.org}))["items"]
            }
            assert got == repos, who


def test_repository_details(world: World, admin: httpx.Client) -> None:
    d = ok(admin.get(f"{API}/repositories/{world.app}"))
    assert d["name"] == world.app and d["namespace"] == world.org
    assert d["visibility"] == "private" and d["tag_count"] == 2
    layers = sum(len(x) for x in world.layers)
    assert d["size"] >= layers + len(world.config)
    assert d["push_count"] >= 1 and d["last_push_at"] is not None
    assert d["permissions"] == ["admin", "delete", "pull", "push"]
    with world.client("reader") as c:
        assert ok(c.get(f"{API}/repositories/{world.app}"))["permissions"] == ["pull"]


def test_tags_with_platforms_sizes_and_times(world: World, admin: httpx.Client) -> None:
    tags = {t["name"]: t for t in ok(admin.get(f"{API}/repositories/{world.app}/-/tags"))["items"]}
    assert set(tags) == {"v1", "multi"}
    v1 = tags["v1"]
    assert v1["digest"] == world.v1_digest
    assert v1["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert v1["platforms"] == ["linux/amd64"]
    assert v1["size"] == len(world.v1) + len(world.config) + sum(len(x) for x in world.layers)
    assert v1["created_at"] and v1["pushed_at"]
    multi = tags["multi"]
    assert multi["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert multi["size"] > v1["size"] + len(world.arm)
    page = ok(admin.get(f"{API}/repositories/{world.app}/-/tags", params={"limit": 1}))
    assert [t["name"] for t in page["items"]] == ["multi"] and page["next_cursor"]


def test_image_details(world: World, admin: httpx.Client) -> None:
    img = ok(admin.get(f"{API}/repositories/{world.app}/-/manifests/v1"))
    assert img["digest"] == world.v1_digest and img["tags"] == ["v1"]
    assert [(x["size"], x["media_type"]) for x in img["layers"]] == [
        (len(x), "application/vnd.oci.image.layer.v1.tar+gzip") for x in world.layers
    ]
    cfg = img["config"]
    assert cfg["entrypoint"] == ["/bin/app"] and cfg["cmd"] == ["--serve"]
    assert cfg["env"] == ["PATH=/usr/bin", "MODE=prod"]
    assert cfg["labels"] == {"org.opencontainers.image.title": "app"}
    assert [h["created_by"] for h in cfg["history"]] == ["ADD rootfs /", "ENV MODE=prod"]
    assert cfg["history"][1]["empty_layer"] is True
    assert (cfg["os"], cfg["architecture"], cfg["created"]) == (
        "linux",
        "amd64",
        "2024-01-02T03:04:05Z",
    )
    assert img["platforms"] == ["linux/amd64"]
    [ref] = img["referrers"]
    assert ref["digest"] == sha256(world.sig)
    assert ref["artifact_type"] == "application/vnd.example.signature"
    assert ref["annotations"] == {"org.example.signed-by": "ci"}
    by_digest = ok(admin.get(f"{API}/repositories/{world.app}/-/manifests/{world.v1_digest}"))
    assert by_digest["digest"] == world.v1_digest
    index = ok(admin.get(f"{API}/repositories/{world.app}/-/manifests/multi"))
    assert index["config"] is None and index["layers"] == []
    assert [m["platform"] for m in index["manifests"]] == ["linux/amd64", "linux/arm64/v8"]
    assert index["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    refs = ok(admin.get(f"{API}/repositories/{world.app}/-/referrers/{world.v1_digest}"))
    assert [r["digest"] for r in refs["items"]] == [sha256(world.sig)]
    none = ok(
        admin.get(
            f"{API}/repositories/{world.app}/-/referrers/{world.v1_digest}",
            params={"artifact_type": "x/y"},
        )
    )
    assert none["items"] == []


def test_image_errors(world: World, admin: httpx.Client) -> None:
    err(admin.get(f"{API}/repositories/{world.app}/-/manifests/nosuchtag"), 404)
    err(admin.get(f"{API}/repositories/{world.app}/-/manifests/sha256:{'0' * 64}"), 404)
    err(admin.get(f"{API}/repositories/{world.app}/-/manifests/sha256:xyz"), 400, "reference")
    err(admin.get(f"{API}/repositories/{world.app}/-/referrers/notadigest"), 400, "digest")
    err(admin.get(f"{API}/repositories/UPPER/Case"), 400, "repository")
    err(admin.get(f"{API}/repositories/{world.org}/nothing-here"), 404)
    err(admin.get(f"{API}/repositories/{world.app}/-/nonsense"), 404)
    r = admin.put(f"{API}/repositories/{world.app}")
    err(r, 405)
    assert "PATCH" in r.headers["allow"]


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("anonymous", 401),
        ("outsider", 403),
        ("reader", 200),
        ("teamuser", 200),
        ("robot", 200),
        ("sysadmin", 200),
    ],
)
def test_who_may_read(world: World, who: str, status: int) -> None:
    with world.client(who) as c:
        for path in ("", "/-/tags", "/-/manifests/v1", f"/-/referrers/{world.v1_digest}"):
            r = c.get(f"{API}/repositories/{world.app}{path}")
            if status == 200:
                ok(r)
            else:
                err(r, status)
        # a refusal does not depend on existence: nothing leaks about private names
        if status == 403:
            err(c.get(f"{API}/repositories/{world.org}/does-not-exist"), 403)


def _fresh_repo(world: World, admin: httpx.Client) -> tuple[str, str]:
    repo = f"{world.org}/t{uuid.uuid4().hex[:8]}"
    payload = image_manifest(admin, repo)
    assert put_manifest(admin, repo, "one", payload).status_code == 201
    assert put_manifest(admin, repo, "two", payload).status_code == 201
    return repo, sha256(payload)


def test_settings_need_admin_role(world: World, admin: httpx.Client) -> None:
    body = {"description": "<script>alert(1)</script> the app", "visibility": "public"}
    for who, status in (
        ("anonymous", 401),
        ("reader", 403),
        ("writer", 403),
        ("teamuser", 403),
        ("robot", 403),
    ):
        with world.client(who) as c:
            err(c.patch(f"{API}/repositories/{world.app}", json=body), status)
    with world.client("repoadmin") as c:
        d = ok(c.patch(f"{API}/repositories/{world.app}", json=body))
        assert d["description"] == body["description"] and d["visibility"] == "public"
        with httpx.Client(base_url=world.server.url) as anon:
            assert anon.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        d = ok(c.patch(f"{API}/repositories/{world.app}", json={"visibility": "private"}))
        assert d["visibility"] == "private" and d["description"] == body["description"]
    events = ok(
        admin.get(f"{API}/audit", params={"action": "repository.update", "repository": world.app})
    )["events"]
    assert events[0]["actor"] == world.users["repoadmin"]
    assert events[0]["details"] == {"visibility": "private"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"visibility": "secret"}, 422, "visibility"),
        ({"description": 5}, 422, "description"),
        ({"description": "x" * 4097}, 422, "description"),
        ({"description": "a\x00b"}, 422, "description"),
        ({"colour": "blue"}, 422, "colour"),
    ],
)
def test_settings_validation(
    world: World, admin: httpx.Client, body: dict[str, object], status: int, field: str
) -> None:
    err(admin.patch(f"{API}/repositories/{world.app}", json=body), status, field)


def test_malformed_bodies(world: World, admin: httpx.Client) -> None:
    url = f"{API}/repositories/{world.app}"
    err(
        admin.patch(url, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "body",
    )
    err(admin.patch(url, content=b"[]", headers={"content-type": "application/json"}), 400, "body")
    err(
        admin.patch(
            url,
            content=b"description=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        400,
        "body",
    )
    err(
        admin.patch(
            url, content=b'{"description": "\\ud800"}', headers={"content-type": "application/json"}
        ),
        422,
        "description",
    )
    err(
        admin.patch(
            url,
            content=b'{"a":"' + b"x" * (1 << 20) + b'"}',
            headers={"content-type": "application/json"},
        ),
        413,
    )


def test_delete_tag_and_manifest(world: World, admin: httpx.Client) -> None:
    repo, digest = _fresh_repo(world, admin)
    ok(
        admin.put(
            f"{API}/repositories/{repo}/-/permissions/users/{world.users['writer']}",
            json={"role": "write"},
        ),
        204,
    )
    with world.client("writer") as c:  # write is pull and push, not delete
        err(c.delete(f"{API}/repositories/{repo}/-/tags/one"), 403)
    ok(admin.delete(f"{API}/repositories/{repo}/-/tags/one"), 204)
    err(admin.delete(f"{API}/repositories/{repo}/-/tags/one"), 404)
    err(admin.delete(f"{API}/repositories/{repo}/-/tags/bad%20tag"), 400, "tag")
    assert [t["name"] for t in ok(admin.get(f"{API}/repositories/{repo}/-/tags"))["items"]] == [
        "two"
    ]
    err(admin.delete(f"{API}/repositories/{repo}/-/manifests/two"), 400, "reference")
    ok(admin.delete(f"{API}/repositories/{repo}/-/manifests/{digest}"), 204)
    assert ok(admin.get(f"{API}/repositories/{repo}/-/tags"))["items"] == []
    assert admin.get(f"/v2/{repo}/manifests/{digest}").status_code == 404
    actions = [
        e["action"] for e in ok(admin.get(f"{API}/audit", params={"repository": repo}))["events"]
    ]
    assert "tag.delete" in actions and "manifest.delete" in actions


def test_delete_repository(world: World, admin: httpx.Client) -> None:
    repo, digest = _fresh_repo(world, admin)
    layer_digest = json.loads(
        admin.get(
            f"/v2/{repo}/manifests/one",
            headers={"accept": "application/vnd.oci.image.manifest.v1+json"},
        ).content
    )["layers"][0]["digest"]
    with world.client("teamuser") as c:  # write on the organization: not admin
        err(c.delete(f"{API}/repositories/{repo}"), 403)
    with world.client("orgadmin") as c:
        ok(c.delete(f"{API}/repositories/{repo}"), 204)
    err(admin.get(f"{API}/repositories/{repo}"), 404)
    assert admin.get(f"/v2/{repo}/tags/list").status_code == 404
    assert admin.head(f"/v2/{repo}/blobs/{layer_digest}").status_code == 404
    assert repo not in {
        r["name"]
        for r in ok(
            admin.get(f"{API}/repositories", params={"namespace": world.org, "limit": 200})
        )["items"]
    }
    err(admin.delete(f"{API}/repositories/{repo}"), 404)
    # the name can be pushed to again, from scratch
    assert put_manifest(admin, repo, "again", image_manifest(admin, repo)).status_code == 201
    [event] = ok(
        admin.get(f"{API}/audit", params={"action": "repository.delete", "repository": repo})
    )["events"]
    assert event["actor"] == world.users["orgadmin"]


def test_repository_permissions_api(world: World) -> None:
    target = world.users["outsider"]
    url = f"{API}/repositories/{world.app}/-/permissions"
    with world.client("repoadmin") as c:
        ok(c.put(f"{url}/users/{target}", json={"role": "read"}), 204)
        grants = ok(c.get(url))["items"]
        assert {"user": target, "team": None, "role": "read"} in grants
        ok(c.put(f"{url}/teams/{world.org}/devs", json={"role": "admin"}), 204)
        ok(c.delete(f"{url}/teams/{world.org}/devs"), 204)
        err(c.put(f"{url}/users/{target}", json={"role": "owner"}), 422, "role")
        err(c.put(f"{url}/users/{target}", json={}), 422, "role")
        err(c.put(f"{url}/users/nobody-{world.s}", json={"role": "read"}), 404)
        err(c.put(f"{url}/teams/{world.org}/nosuch", json={"role": "read"}), 404)
        page = ok(c.get(url, params={"limit": 1}))
        assert len(page["items"]) == 1 and page["next_cursor"]
    with world.client("outsider") as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 200
        err(c.get(url), 403)
        err(c.put(f"{url}/users/{target}", json={"role": "admin"}), 403)
    with world.client("repoadmin") as c:
        ok(c.delete(f"{url}/users/{target}"), 204)
    with world.client("outsider") as c:
        assert c.get(f"/v2/{world.app}/manifests/v1").status_code == 403


def test_counters_follow_pulls_and_pushes(world: World, admin: httpx.Client) -> None:
    repo, _ = _fresh_repo(world, admin)
    before = ok(admin.get(f"{API}/repositories/{repo}"))
    for _ in range(3):
        assert admin.get(f"/v2/{repo}/manifests/one").status_code == 200
    # counters are written by the audit flusher, off the request path: wait for its batch
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = ok(admin.get(f"{API}/repositories/{repo}"))
        if after["pull_count"] >= before["pull_count"] + 3:
            break
        time.sleep(0.2)
    assert after["pull_count"] == before["pull_count"] + 3
    assert after["push_count"] == 2 and after["last_pull_at"] is not None
