"""Webhooks end to end against a real ``moorage serve`` and a real receiver on loopback: added
with the CLI, the API and the UI; pushes, pulls and deletes delivered signed (the receiver
verifies every signature with the reference verifier); the delivery log with response codes
and timings; "send test event"; retries that survive a restart of the node; secrets stored
encrypted; who may manage webhooks."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from moorage.hooks.signing import verify

from ..conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    admin_cli,
    image_manifest,
    put_manifest,
)
from ..ui.conftest import csrf_from, login_http
from .conftest import KEY_SECRET, cli, events_of, eventually
from .receiver import WebhookReceiver

SECRET = "receiver-shared-secret-0123456789"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _add_cli(server: MoorageServer, target: str, url: str, events: str, *extra: str) -> int:
    r = cli(
        server,
        "webhooks", "add", target, url, "--events", events, "--secret-stdin", *extra,
        stdin=SECRET + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout  # a secret given on stdin is never echoed
    return int(r.stdout.split()[1])


def _deliveries(server: MoorageServer, hook_id: int) -> list[dict[str, Any]]:
    r = cli(server, "webhooks", "deliveries", str(hook_id), "--json", "--limit", "100")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _push(c: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    manifest = image_manifest(c, repo)
    r = put_manifest(c, repo, tag, manifest)
    assert r.status_code == 201, r.text
    return r.headers["docker-content-digest"], manifest


def _cloudevent(d: Any, secret: str) -> Any:
    """The CloudEvents SDK's reading of a delivery (after its signature is verified)."""
    body = _verified(d, secret)
    return from_http_event(
        HTTPMessage(headers={"content-type": d.headers["content-type"]}, body=body)
    )


def _verified(rx_delivery: Any, secret: str = SECRET) -> bytes:
    verify(rx_delivery.headers.get("x-moorage-signature"), rx_delivery.body, secret)
    return bytes(rx_delivery.body)


def test_push_pull_delete_signed_in_distributions_envelope(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    admin_cli(hook_server, "create-org", org)
    hook_id = _add_cli(hook_server, org, receiver.url("/reg"), "push,pull,delete")
    listed = cli(hook_server, "webhooks", "list", org)
    assert listed.returncode == 0 and f"{hook_id}\t{org}\t{receiver.url('/reg')}" in listed.stdout
    repo = f"{org}/app"
    digest, manifest = _push(admin, repo, "v1")
    assert admin.get(f"/v2/{repo}/manifests/v1", headers={"Accept": MANIFEST}).status_code == 200
    assert admin.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    got = receiver.wait_for(3)
    by_action: dict[str, dict[str, Any]] = {}
    for d in got:
        assert d.method == "POST" and d.path == "/reg"
        assert d.headers["content-type"] == "application/vnd.docker.distribution.events.v1+json"
        assert d.headers["user-agent"].startswith("Moorage-Webhooks/")
        (event,) = events_of(_verified(d))
        assert d.headers["x-moorage-event"] == event["action"]
        by_action[event["action"]] = event
    assert set(by_action) == {"push", "pull", "delete"}
    push = by_action["push"]["target"]
    assert push == {
        "mediaType": MANIFEST,
        "size": len(manifest),
        "digest": digest,
        "length": len(manifest),
        "repository": repo,
        "tag": "v1",
    }
    assert by_action["push"]["actor"] == {"name": "admin"}
    pull = by_action["pull"]
    assert pull["target"]["digest"] == digest and pull["target"]["tag"] == "v1"
    assert pull["target"]["size"] == len(manifest) and pull["request"]["method"] == "GET"
    assert pull["request"]["useragent"].startswith("python-httpx")
    assert by_action["delete"]["target"] == {"repository": repo, "tag": "v1"}
    # The delivery log: every one delivered at the first attempt, with its code and time.
    log = eventually(lambda: (d := _deliveries(hook_server, hook_id)) and len(d) == 3 and d)
    assert {d["state"] for d in log} == {"succeeded"}
    for d in log:
        (attempt,) = d["attempt_log"]
        assert attempt["status"] == 200 and attempt["duration_ms"] >= 0
    # The secret is stored sealed with auth.token.key_encryption_secret.
    if hook_server.database_url is None:
        with sqlite3.connect(hook_server.data_dir / "moorage.db") as db:
            (stored,) = db.execute(
                "SELECT secret FROM webhooks WHERE id = ?", (hook_id,)
            ).fetchone()
        assert stored.startswith("enc:v1:") and SECRET not in stored and KEY_SECRET not in stored
    # Events nobody subscribed to are not sent: a second repository's push is (namespace
    # webhook), a foreign organization's is not.
    other = f"other{uuid.uuid4().hex[:6]}"
    admin_cli(hook_server, "create-org", other)
    _push(admin, f"{other}/app", "v1")
    _push(admin, f"{org}/second", "v1")
    (last,) = events_of(_verified(receiver.wait_for(4)[3]))
    assert last["target"]["repository"] == f"{org}/second"


def test_api_cloudevents_test_event_and_delivery_log(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    admin_cli(hook_server, "create-org", org)
    repo = f"{org}/svc"
    r = admin.post(
        "/api/v1/webhooks",
        json={
            "target": repo,
            "url": receiver.url("/ce"),
            "events": ["push"],
            "format": "cloudevents",
            "description": "deploy bot",
        },
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    secret = hook["secret"]
    assert len(secret) >= 32 and hook["scope"] == "repository" and hook["target"] == repo
    assert "secret" not in admin.get(f"/api/v1/webhooks/{hook['id']}").json()
    # Send test event.
    r = admin.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 202 and r.json()["kind"] == "test", r.text
    test_delivery = r.json()["id"]
    first = receiver.wait_for(1)[0]
    event = _cloudevent(first, secret)
    assert event.get_type() == "io.moorage.webhook.test" and event.get_subject() == repo
    # A push, as a CloudEvent (structured mode), parsed by the CloudEvents SDK.
    digest, _ = _push(admin, repo, "1.0")
    pushed = receiver.wait_for(2)[1]
    assert pushed.headers["content-type"].startswith("application/cloudevents+json")
    ce = _cloudevent(pushed, secret)
    assert ce.get_type() == "io.moorage.artifact.pushed" and ce.get_subject() == f"{repo}:1.0"
    assert ce.get_data()["digest"] == digest and ce.get_data()["actor"] == "admin"

    # The delivery log through the API: states, codes, timings, the payload as sent.
    def logged() -> list[dict[str, Any]] | None:
        items = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
        return items if len(items) == 2 and all(i["state"] == "succeeded" for i in items) else None

    items = eventually(logged)
    assert [i["kind"] for i in items] == ["push", "test"]  # newest first
    assert all(i["attempt_log"][0]["status"] == 200 for i in items)
    detail = admin.get(f"/api/v1/webhooks/{hook['id']}/deliveries/{test_delivery}").json()
    assert (
        detail["body"].encode() == first.body
        and detail["uid"] == first.headers["x-moorage-delivery"]
    )
    # Redelivery sends the same body again as a new delivery.
    again = admin.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{test_delivery}/redeliver")
    assert again.status_code == 202 and again.json()["id"] != test_delivery
    assert receiver.wait_for(3)[2].body == first.body
    # Switched off: nothing is sent; deleted: gone with its log.
    assert (
        admin.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": False}).json()["enabled"]
        is False
    )
    assert admin.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert admin.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert "/webhooks/{webhook_id}/deliveries" in admin.get("/api/v1/openapi.json").json()["paths"]


def test_retries_survive_a_node_restart(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    """The receiver fails twice; the node stops after the first failure and starts again; the
    delivery is retried (with backoff) from the database, and the log shows every attempt."""
    admin_cli(hook_server, "create-org", org)
    hook_id = _add_cli(hook_server, f"{org}/app", receiver.url("/flaky"), "push")
    receiver.respond_with(500, times=2)
    _push(admin, f"{org}/app", "v1")
    receiver.wait_for(1)
    hook_server.stop()
    try:
        # While no node runs, the command line reads the log from the database.
        (pending,) = eventually(lambda: _deliveries(hook_server, hook_id))
        assert pending["state"] in ("retrying", "succeeded") and pending["attempts"] >= 1
        assert pending["attempt_log"][0]["status"] == 500
    finally:
        hook_server.start()
    got = receiver.wait_for(3, timeout=60)
    assert [d.answered for d in got] == [500, 500, 200]
    assert len({d.body for d in got}) == 1  # the same event every time (receivers dedupe)
    assert len({d.headers["x-moorage-delivery"] for d in got}) == 1
    for d in got:
        _verified(d)
    (done,) = eventually(
        lambda: [d for d in _deliveries(hook_server, hook_id) if d["state"] == "succeeded"]
    )
    assert [a["status"] for a in done["attempt_log"]] == [500, 500, 200]
    assert done["attempts"] == 3


def test_ui_add_test_and_delivery_log(
    hook_server: MoorageServer, receiver: WebhookReceiver, org: str
) -> None:
    admin_cli(hook_server, "create-org", org)
    with login_http(hook_server) as c:
        page = c.get("/ui/webhooks")
        assert page.status_code == 200 and 'href="/ui/webhooks"' in page.text
        r = c.post(
            "/ui/webhooks",
            data={
                "csrf_token": csrf_from(page.text),
                "target": org,
                "url": receiver.url("/ui"),
                "event_push": "1",
                "format": "distribution",
                "secret": "",
                "description": "from the UI",
            },
        )
        assert r.status_code == 200 and 'id="webhook-secret"' in r.text, r.text
        secret = r.text.split('<code class="secret">')[1].split("<")[0]
        hook_id = int(r.text.split("<h1>Webhook ")[1].split()[0])
        r = c.post(f"/ui/webhooks/{hook_id}/test", data={"csrf_token": csrf_from(r.text)})
        assert r.status_code == 303
        got = receiver.wait_for(1)[0]
        (event,) = events_of(_verified(got, secret))
        assert event["action"] == "test"

        def shown() -> str | None:
            text = c.get(f"/ui/webhooks/{hook_id}").text
            return text if "delivery-succeeded" in text else None

        text = eventually(shown)
        assert '<td class="status">200</td>' in text and " ms</td>" in text
        secret_page = c.get(f"/ui/webhooks/{hook_id}")
        assert secret not in secret_page.text  # shown once
        delivery_id = text.split(f'href="/ui/webhooks/{hook_id}/deliveries/')[1].split('"')[0]
        detail = c.get(f"/ui/webhooks/{hook_id}/deliveries/{delivery_id}")
        assert detail.status_code == 200 and 'id="attempt-table"' in detail.text
        assert "&#34;action&#34;:&#34;test&#34;" in detail.text  # the payload, escaped


def test_only_admins_of_the_target_manage_its_webhooks(
    hook_server: MoorageServer, admin: httpx.Client, receiver: WebhookReceiver, org: str
) -> None:
    admin_cli(hook_server, "create-org", org)
    name = f"u{uuid.uuid4().hex[:8]}"
    password = "member-password-12345"
    admin_cli(hook_server, "create-user", name, "--password-stdin", stdin=password + "\n")
    body = {"target": org, "url": receiver.url(), "events": ["push"]}
    with httpx.Client(base_url=hook_server.url, auth=(name, password), timeout=30) as c:
        r = c.post("/api/v1/webhooks", json=body)
        assert r.status_code == 403, r.text
        created = admin.post("/api/v1/webhooks", json=body).json()
        assert c.get(f"/api/v1/webhooks/{created['id']}").status_code == 404
        assert c.get("/api/v1/webhooks").json()["items"] == []
        # Their own namespace is theirs.
        own = c.post("/api/v1/webhooks", json={**body, "target": f"{name}/app"})
        assert own.status_code == 201, own.text
        # The organization's admin role makes the organization's webhooks theirs.
        assert (
            admin.put(
                f"/api/v1/organizations/{org}/permissions/users/{name}", json={"role": "admin"}
            ).status_code
            == 204
        )
        assert c.get(f"/api/v1/webhooks/{created['id']}").status_code == 200
        assert {h["id"] for h in c.get("/api/v1/webhooks").json()["items"]} == {
            created["id"],
            own.json()["id"],
        }


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://10.0.0.1/hook",  # private, not allowed by this server's configuration
        "http://[::1]:8080/hook",  # loopback, not in allowed_networks (127.0.0.1/32 only)
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
    ],
)
def test_receivers_the_operator_did_not_allow_are_refused(
    hook_server: MoorageServer, admin: httpx.Client, org: str, url: str
) -> None:
    r = admin.post("/api/v1/webhooks", json={"target": org, "url": url, "events": ["push"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "url", r.text
    refused = cli(hook_server, "webhooks", "add", org, url, "--events", "push")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_the_cli_contract(hook_server: MoorageServer, receiver: WebhookReceiver, org: str) -> None:
    admin_cli(hook_server, "create-org", org)
    bad = cli(hook_server, "webhooks", "add", org, receiver.url(), "--events", "push,nope")
    assert bad.returncode == 1 and "events" in bad.stderr
    r = cli(
        hook_server,
        "webhooks",
        "add",
        org,
        receiver.url(),
        "--events",
        "push",
        "--format",
        "cloudevents",
    )
    assert r.returncode == 0, r.stderr
    hook_id = r.stdout.split()[1]
    assert "signing secret (shown once): " in r.stdout
    t = cli(hook_server, "webhooks", "test", hook_id)
    assert t.returncode == 0 and "queued as delivery" in t.stdout, t.stderr
    receiver.wait_for(1)
    eventually(lambda: "succeeded" in cli(hook_server, "webhooks", "deliveries", hook_id).stdout)
    rm = cli(hook_server, "webhooks", "remove", hook_id)
    assert rm.returncode == 0
    assert cli(hook_server, "webhooks", "remove", hook_id).returncode == 1
    audit = cli(hook_server, "audit", "export", "--format", "jsonl")
    assert audit.returncode == 0 and '"action":"webhook.create"' in audit.stdout.replace(" ", "")
    assert ADMIN_PASSWORD not in audit.stdout
