"""Webhook payloads: every event kind renders in both formats; CloudEvents bodies are read back
by the CloudEvents SDK (structured mode and batch); the Distribution envelope has the very shape
CNCF Distribution 2.8.2 sends (captured live from a real docker-registry by
test_distribution_compat.py); client-supplied text and details are bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from moorage.hooks import payloads as p

NOW = datetime(2026, 12, 6, 4, 53, 55, 958913, tzinfo=UTC)
DIGEST = "sha256:" + "0582a710d7335d35312f8534894d4eec8e17c221321ac7e88f8437568238b3ef"
SOURCE = p.Source(addr="node1:5000", instance_id="node-1", base_url="https://registry.example.com")
TARGET = p.Target(
    repository="team/app",
    digest=DIGEST,
    media_type="application/vnd.oci.image.manifest.v1+json",
    size=416,
    tag="v1",
    url=f"https://registry.example.com/v2/team/app/manifests/{DIGEST}",
    references=(p.Reference("application/vnd.oci.image.config.v1+json", 7, "sha256:" + "1" * 64),),
)
REQUEST = p.RequestInfo("req-1", "10.0.0.9:53250", "registry.example.com", "PUT", "podman/4.3.1")


def every_kind() -> list[p.Event]:
    return [
        p.push_event(TARGET, SOURCE, "alice", REQUEST),
        p.pull_event(TARGET, SOURCE, "", REQUEST),
        p.delete_event(p.Target("team/app", tag="v1"), SOURCE, "alice", REQUEST),
        p.scan_completed_event(
            TARGET,
            SOURCE,
            status="done",
            summary={"critical": 1, "high": 2},
            scanned_at=NOW,
            database_updated_at=NOW - timedelta(hours=3),
            report_url="https://registry.example.com/api/v1/repositories/team/app/-/manifests/v1/vulnerabilities",
        ),
        p.policy_violation_event(
            TARGET, SOURCE, policy="vulnerability", reason="CVE-2025-26519 (critical)", actor="bob"
        ),
        p.replication_finished_event(
            SOURCE,
            policy="to-dr-site",
            execution_id="42",
            remote="dr",
            direction="push",
            status="partial",
            tags_succeeded=39,
            tags_failed=1,
            bytes_copied=123456789,
            started_at=NOW - timedelta(minutes=5),
            finished_at=NOW,
        ),
    ]


def test_every_kind_is_covered() -> None:
    assert [e.kind for e in every_kind()] == list(p.EVENT_KINDS)
    assert list(p.EVENT_KINDS) == ["push", "pull", "delete", "scan", "policy", "replication"]


def _read(body: bytes, ctype: str) -> Any:
    """The CloudEvents SDK's own reader (it validates the required and optional attributes)."""
    return from_http_event(HTTPMessage(headers={"content-type": ctype}, body=body))


@pytest.mark.parametrize("event", every_kind(), ids=lambda e: e.kind)
def test_cloudevents_sdk_reads_structured_mode(event: p.Event) -> None:
    body, ctype = p.render([event], "cloudevents")
    assert ctype == p.CLOUDEVENTS_MEDIA_TYPE
    ce = _read(body, ctype)
    assert ce.get_specversion() == "1.0"
    assert ce.get_id() == event.id
    assert ce.get_type() == p.CLOUDEVENT_TYPES[event.kind]
    assert ce.get_source() == "https://registry.example.com"
    assert ce.get_time() == event.time
    assert ce.get_datacontenttype() == "application/json"
    assert json.loads(body)["time"].endswith("Z")
    data = ce.get_data()
    assert isinstance(data, dict)
    for key, value in event.details.items():
        assert data[key] == value
    if event.target is not None:
        assert data["repository"] == event.target.repository
        assert ce.get_subject() == (
            f"team/app:{event.target.tag}" if event.target.tag else f"team/app@{DIGEST}"
        )


def test_cloudevents_batch() -> None:
    body, ctype = p.render(every_kind(), "cloudevents")
    assert ctype == p.CLOUDEVENTS_BATCH_MEDIA_TYPE
    docs = json.loads(body)
    assert [d["type"] for d in docs] == [p.CLOUDEVENT_TYPES[k] for k in p.EVENT_KINDS]
    for doc in docs:  # each member is a valid structured event on its own
        ce = _read(json.dumps(doc).encode(), p.CLOUDEVENTS_MEDIA_TYPE)
        assert ce.get_id() == doc["id"]


def test_distribution_envelope() -> None:
    body, ctype = p.render(every_kind(), "distribution")
    assert ctype == "application/vnd.docker.distribution.events.v1+json"
    events = json.loads(body)["events"]
    assert [e["action"] for e in events] == list(p.EVENT_KINDS)
    push = events[0]
    assert push["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 416,
        "digest": DIGEST,
        "length": 416,
        "repository": "team/app",
        "url": f"https://registry.example.com/v2/team/app/manifests/{DIGEST}",
        "tag": "v1",
        "references": [
            {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": 7,
                "digest": "sha256:" + "1" * 64,
            }
        ],
    }
    assert push["request"] == {
        "id": "req-1",
        "addr": "10.0.0.9:53250",
        "host": "registry.example.com",
        "method": "PUT",
        "useragent": "podman/4.3.1",
    }
    assert push["actor"] == {"name": "alice"} and events[1]["actor"] == {}
    assert push["source"] == {"addr": "node1:5000", "instanceID": "node-1"}
    assert push["timestamp"] == "2026-12-06T04:53:55.958913Z" or push["timestamp"].endswith("Z")
    assert events[2]["target"] == {"repository": "team/app", "tag": "v1"}  # a tag deletion
    assert events[3]["moorage"]["summary"] == {"critical": 1, "high": 2}
    assert events[5]["target"] == {} and events[5]["moorage"]["tags_failed"] == 1
    assert "moorage" not in push


def test_bounds_and_errors() -> None:
    long_ua = p.RequestInfo(useragent="x" * 100_000)
    body, _ = p.render([p.pull_event(TARGET, SOURCE, "a" * 5000, long_ua)], "distribution")
    event = json.loads(body)["events"][0]
    assert len(event["request"]["useragent"]) <= p.MAX_TEXT
    assert len(event["actor"]["name"]) <= p.MAX_TEXT
    with pytest.raises(p.PayloadError):
        p.Event("scan", TARGET, SOURCE, details={"findings": ["x" * 100] * 1000})
    with pytest.raises(p.PayloadError):
        p.Event("upload", TARGET, SOURCE)  # type: ignore[arg-type]
    with pytest.raises(p.PayloadError):
        p.render([p.Event("push", TARGET, SOURCE, time=datetime(2026, 1, 1))], "distribution")
    with pytest.raises(p.PayloadError):
        p.render([], "distribution")
    with pytest.raises(p.PayloadError):
        p.render([p.push_event(TARGET, SOURCE)] * (p.MAX_EVENTS + 1), "cloudevents")
    with pytest.raises(p.PayloadError):
        p.render([p.push_event(TARGET, SOURCE)], "xml")  # type: ignore[arg-type]


def test_bodies_are_deterministic_bytes() -> None:
    """What is signed is what is sent: rendering the same event twice gives the same bytes."""
    e = p.push_event(TARGET, SOURCE, "alice", REQUEST)
    assert p.render([e], "distribution") == p.render([e], "distribution")
    assert p.render([e], "cloudevents") == p.render([e], "cloudevents")
    body, _ = p.render([p.push_event(p.Target("team/ünï"), SOURCE)], "cloudevents")
    assert "ünï".encode() in body  # UTF-8 as is
