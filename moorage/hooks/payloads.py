"""Webhook payloads: the events Moorage announces, in CNCF Distribution's notification envelope
or as CloudEvents 1.0 (structured mode, JSON).

Distribution's envelope is what registry tooling already parses (``{"events": [...]}`` sent as
``application/vnd.docker.distribution.events.v1+json``, each event with ``id``, ``timestamp``,
``action``, ``target``, ``request``, ``actor``, ``source``); CloudEvents is what event routers
(Knative, Argo Events, EventBridge, Azure Event Grid) take. The same :class:`Event` renders to
both. The events Distribution itself has (push, pull, delete) keep its field names and action
words exactly; the others (scan, policy, replication) use the same envelope with their action
word and their figures under ``moorage``.

Bodies are built here once, as bytes: the signature (signing.py) covers exactly the bytes sent.
Every string that came from a client (user agent, tag, reason) is bounded in length, and the
kind-specific details are bounded in size, so a payload never grows with hostile input.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

DISTRIBUTION_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
CLOUDEVENTS_MEDIA_TYPE = "application/cloudevents+json; charset=utf-8"
CLOUDEVENTS_BATCH_MEDIA_TYPE = "application/cloudevents-batch+json; charset=utf-8"

EventKind = Literal["push", "pull", "delete", "scan", "policy", "replication", "test"]
Format = Literal["distribution", "cloudevents"]
# What a webhook subscribes to; "test" is the "send test event" delivery, sent on request only.
EVENT_KINDS: tuple[EventKind, ...] = ("push", "pull", "delete", "scan", "policy", "replication")
TEST_KIND: EventKind = "test"
FORMATS: tuple[Format, ...] = ("distribution", "cloudevents")

# CloudEvents ``type`` of each kind (reverse-DNS, as the spec recommends).
CLOUDEVENT_TYPES: dict[EventKind, str] = {
    "push": "io.moorage.artifact.pushed",
    "pull": "io.moorage.artifact.pulled",
    "delete": "io.moorage.artifact.deleted",
    "scan": "io.moorage.scan.completed",
    "policy": "io.moorage.policy.violated",
    "replication": "io.moorage.replication.finished",
    "test": "io.moorage.webhook.test",
}

MAX_TEXT = 512  # any client-supplied string in a payload
MAX_DETAILS_BYTES = 16 * 1024  # kind-specific figures of one event
MAX_EVENTS = 100  # events in one envelope


class PayloadError(ValueError):
    """An event that cannot be rendered (unknown kind, details too large, …)."""


def _text(value: str | None) -> str:
    if value is None:
        return ""
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def _timestamp(ts: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (both formats want RFC 3339; Distribution writes Go's
    RFC3339Nano)."""
    if ts.tzinfo is None:
        raise PayloadError("event time must carry a time zone")
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Reference:
    """A descriptor a manifest refers to (config, layer, index child)."""

    media_type: str
    size: int
    digest: str


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about: a manifest (or blob) in a repository. Empty fields are left out
    of the envelope, as Distribution does (a tag deletion names only repository and tag)."""

    repository: str
    digest: str = ""
    media_type: str = ""
    size: int = 0
    tag: str | None = None
    url: str | None = None  # where a client fetches it (the registry's base URL + /v2 path)
    artifact_type: str | None = None
    references: tuple[Reference, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The HTTP request that caused the event (Distribution's ``request``)."""

    id: str = ""
    addr: str = ""
    host: str = ""
    method: str = ""
    useragent: str = ""


@dataclass(frozen=True, slots=True)
class Source:
    """The node that emitted the event (Distribution's ``source``; CloudEvents ``source``)."""

    addr: str = ""  # host:port of the node
    instance_id: str = ""
    base_url: str = ""  # http.base_url: the registry as clients know it


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    target: Target | None
    source: Source
    actor: str = ""
    request: RequestInfo | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS and self.kind != TEST_KIND:
            raise PayloadError(f"unknown event kind {self.kind!r}")
        size = len(json.dumps(self.details, separators=(",", ":"), default=str))
        if size > MAX_DETAILS_BYTES:
            raise PayloadError(
                f"{self.kind} event details are {size} bytes (max {MAX_DETAILS_BYTES})"
            )


# --- builders for each kind ------------------------------------------------------------------


def push_event(
    target: Target, source: Source, actor: str = "", request: RequestInfo | None = None
) -> Event:
    """A manifest was pushed (with *target.tag* when pushed by tag)."""
    return Event("push", target, source, actor, request)


def pull_event(
    target: Target, source: Source, actor: str = "", request: RequestInfo | None = None
) -> Event:
    """A manifest was pulled."""
    return Event("pull", target, source, actor, request)


def delete_event(
    target: Target, source: Source, actor: str = "", request: RequestInfo | None = None
) -> Event:
    """A manifest or a tag (*target.tag*) was deleted."""
    return Event("delete", target, source, actor, request)


def scan_completed_event(
    target: Target,
    source: Source,
    *,
    status: Literal["done", "failed", "unsupported"],
    summary: Mapping[str, int],
    scanned_at: datetime,
    database_updated_at: datetime | None = None,
    report_url: str | None = None,
) -> Event:
    """A vulnerability scan of *target* finished; *summary* counts findings by severity."""
    details: dict[str, Any] = {
        "status": status,
        "summary": {str(k): int(v) for k, v in summary.items()},
        "scanned_at": _timestamp(scanned_at),
    }
    if database_updated_at is not None:
        details["database_updated_at"] = _timestamp(database_updated_at)
    if report_url:
        details["report_url"] = _text(report_url)
    return Event("scan", target, source, details=details)


def policy_violation_event(
    target: Target,
    source: Source,
    *,
    policy: str,
    reason: str,
    action: str = "pull",
    actor: str = "",
    request: RequestInfo | None = None,
) -> Event:
    """A policy of the chain (vulnerability, signature, quota, immutability…) refused *action*
    on *target*."""
    details = {"policy": _text(policy), "reason": _text(reason), "action": _text(action)}
    return Event("policy", target, source, actor, request, details)


def replication_finished_event(
    source: Source,
    *,
    policy: str,
    execution_id: str,
    remote: str,
    direction: Literal["push", "pull"],
    status: Literal["succeeded", "partial", "failed"],
    tags_succeeded: int,
    tags_failed: int,
    bytes_copied: int,
    started_at: datetime,
    finished_at: datetime,
    target: Target | None = None,
) -> Event:
    """A replication policy's execution finished (per-tag outcomes are in its history)."""
    details = {
        "policy": _text(policy),
        "execution_id": _text(execution_id),
        "remote": _text(remote),
        "direction": direction,
        "status": status,
        "tags_succeeded": int(tags_succeeded),
        "tags_failed": int(tags_failed),
        "bytes": int(bytes_copied),
        "started_at": _timestamp(started_at),
        "finished_at": _timestamp(finished_at),
    }
    return Event("replication", target, source, details=details)


def test_event(source: Source, target: str, actor: str = "") -> Event:
    """What "send test event" delivers: action ``test`` about the webhook's organization or
    repository (*target*), so a receiver can check its signature verification end to end."""
    return Event(
        TEST_KIND,
        Target(repository=target),
        source,
        actor,
        details={"message": "a test event from Moorage: the signature verified"},
    )


# --- CNCF Distribution envelope ----------------------------------------------------------------


def _distribution_target(t: Target) -> dict[str, Any]:
    """Distribution's Target: every field ``omitempty``; ``length`` repeats ``size``."""
    out: dict[str, Any] = {}
    if t.media_type:
        out["mediaType"] = t.media_type
    if t.size:
        out["size"] = t.size
    if t.digest:
        out["digest"] = t.digest
    if t.size:
        out["length"] = t.size
    if t.repository:
        out["repository"] = t.repository
    if t.url:
        out["url"] = t.url
    if t.tag:
        out["tag"] = _text(t.tag)
    if t.references:
        out["references"] = [
            {"mediaType": r.media_type, "size": r.size, "digest": r.digest} for r in t.references
        ]
    if t.artifact_type:
        out["artifactType"] = t.artifact_type
    return out


def distribution_event(e: Event) -> dict[str, Any]:
    """One event as Distribution's notifications package writes it."""
    req = e.request or RequestInfo()
    out: dict[str, Any] = {
        "id": e.id,
        "timestamp": _timestamp(e.time),
        "action": e.kind,
        "target": _distribution_target(e.target) if e.target else {},
        "request": {
            "id": _text(req.id),
            "addr": _text(req.addr),
            "host": _text(req.host),
            "method": _text(req.method),
            "useragent": _text(req.useragent),
        },
        "actor": {"name": _text(e.actor)} if e.actor else {},
        "source": {"addr": e.source.addr, "instanceID": e.source.instance_id},
    }
    if e.details:
        out["moorage"] = dict(e.details)
    return out


def distribution_envelope(events: Sequence[Event]) -> bytes:
    """``{"events": [...]}``, as bytes (sent with :data:`DISTRIBUTION_MEDIA_TYPE`)."""
    if not events or len(events) > MAX_EVENTS:
        raise PayloadError(f"an envelope holds 1 to {MAX_EVENTS} events")
    return _dump({"events": [distribution_event(e) for e in events]})


# --- CloudEvents 1.0 (structured mode) -----------------------------------------------------------


def _subject(t: Target | None) -> str | None:
    if t is None:
        return None
    if t.tag:
        return f"{t.repository}:{_text(t.tag)}"
    if t.digest:
        return f"{t.repository}@{t.digest}"
    return t.repository


def cloudevent(e: Event) -> dict[str, Any]:
    """One event as a CloudEvents 1.0 JSON object."""
    data: dict[str, Any] = {}
    if e.target is not None:
        t = e.target
        data.update(repository=t.repository, digest=t.digest, mediaType=t.media_type, size=t.size)
        if t.tag:
            data["tag"] = _text(t.tag)
        if t.url:
            data["url"] = t.url
        if t.artifact_type:
            data["artifactType"] = t.artifact_type
    if e.actor:
        data["actor"] = _text(e.actor)
    if e.request is not None:
        data["request"] = {
            "id": _text(e.request.id),
            "addr": _text(e.request.addr),
            "method": _text(e.request.method),
            "useragent": _text(e.request.useragent),
        }
    data.update(e.details)
    out: dict[str, Any] = {
        "specversion": "1.0",
        "id": e.id,
        "source": e.source.base_url or f"/moorage/{e.source.instance_id or 'node'}",
        "type": CLOUDEVENT_TYPES[e.kind],
        "time": _timestamp(e.time),
        "datacontenttype": "application/json",
    }
    subject = _subject(e.target)
    if subject:
        out["subject"] = subject
    out["data"] = data
    return out


def cloudevents_body(events: Sequence[Event]) -> tuple[bytes, str]:
    """One event in structured mode, or several as a JSON batch; with its content type."""
    if not events or len(events) > MAX_EVENTS:
        raise PayloadError(f"a delivery holds 1 to {MAX_EVENTS} events")
    if len(events) == 1:
        return _dump(cloudevent(events[0])), CLOUDEVENTS_MEDIA_TYPE
    return _dump([cloudevent(e) for e in events]), CLOUDEVENTS_BATCH_MEDIA_TYPE


def render(events: Sequence[Event], fmt: Format) -> tuple[bytes, str]:
    """The body and content type of a delivery of *events* in *fmt*."""
    if fmt == "distribution":
        return distribution_envelope(events), DISTRIBUTION_MEDIA_TYPE
    if fmt == "cloudevents":
        return cloudevents_body(events)
    raise PayloadError(f"unknown format {fmt!r} (distribution or cloudevents)")


def _dump(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
