"""Audit log configuration (mounted at ``audit:`` in the Moorage configuration)."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}

Facility = Literal[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    address = address.strip()
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{address!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{address!r}: expected host:port")
    if not host:
        raise ValueError(f"{address!r}: missing host")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{address!r}: port must be a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{address!r}: port out of range")
    return host, port


class SyslogConfig(_Section):
    address: str | None = Field(
        None,
        description="Syslog receiver as host:port ([v6]:port); audit records are sent there as "
        "RFC 5424 messages. Unset: no syslog forwarding.",
    )
    protocol: Literal["udp", "tcp"] = Field(
        "udp",
        description="udp (RFC 5426, one message per datagram) or tcp (RFC 6587 octet-counting "
        "framing).",
    )
    app_name: str = Field(
        "moorage", min_length=1, max_length=48, description="RFC 5424 APP-NAME of the messages."
    )
    facility: Facility = Field(
        "authpriv",
        description="Syslog facility (auth, authpriv, audit, daemon, local0..local7, ...).",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value:
            split_host_port(value)
            return value
        return None

    @field_validator("app_name")
    @classmethod
    def _check_app_name(cls, value: str) -> str:
        if not all(33 <= ord(ch) <= 126 for ch in value):
            raise ValueError("app_name must be printable ASCII without spaces")
        return value


class HTTPForwardConfig(_Section):
    url: str | None = Field(
        None,
        description='HTTP(S) endpoint receiving audit records as POSTed JSON batches ({"events": '
        "[...]}). Unset: no HTTP forwarding.",
    )
    timeout: float = Field(10.0, gt=0, description="Seconds one POST may take.")
    max_retries: int = Field(
        3,
        ge=0,
        description="Immediate retries of a failed POST (with exponential backoff) before the "
        "batch waits for a later attempt.",
    )
    backoff_seconds: float = Field(
        0.5, gt=0, description="First retry delay; doubled on every further retry (max 30 s)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. Authorization (in the environment: a JSON "
        "object).",
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _headers_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError(
                    "headers must be a mapping (a JSON object in the environment)"
                ) from None
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value or None


class RetentionConfig(_Section):
    max_age_days: float = Field(
        0, ge=0, description="Prune records older than this many days (0: keep forever)."
    )
    max_events: int = Field(
        0, ge=0, description="Keep at most this many newest records (0: unlimited)."
    )


class AuditConfig(_Section):
    enabled: bool = Field(True, description="Record audit events.")
    pull_events: Literal["all", "sample", "aggregate"] = Field(
        "all",
        description="Successful pulls (manifest.pull, blob.pull): all (one record each), sample "
        "(a random pull_sample_rate share) or aggregate (one record per identical pull per "
        "pull_aggregate_seconds, with a count). Denied and failed pulls are always recorded.",
    )
    pull_sample_rate: float = Field(
        0.1, ge=0, le=1, description="Share of successful pulls recorded when pull_events=sample."
    )
    pull_aggregate_seconds: float = Field(
        60.0, gt=0, description="Aggregation window when pull_events=aggregate."
    )
    refusal_aggregate_seconds: float = Field(
        60.0,
        gt=0,
        description="Refused requests (401/403/429 on /v2 and /api/v1) are recorded per actor, "
        "repository, action and status: the first of each window at once, the rest of the "
        "window as one record with a count (failed logins are recorded one by one).",
    )
    flush_interval_ms: int = Field(
        150, ge=1, le=60000, description="How often queued events are written to the database."
    )
    batch_size: int = Field(
        1000,
        ge=1,
        le=10000,
        description="Queued events that trigger a write before flush_interval_ms is up. Under a "
        "burst of pulls each write transaction (chain lock, head, activity counters) then "
        "carries about a thousand records instead of a few hundred.",
    )
    queue_size: int = Field(
        20_000,
        ge=1,
        description="Records held in memory waiting for the writer (about a second of the "
        "fastest pull rate). When it is full, successful pulls are aggregated (one record per "
        "actor, repository, tag and digest per pull_aggregate_seconds, with a count); other "
        "events are never aggregated or dropped.",
    )
    forward_queue_size: int = Field(
        10_000,
        ge=1,
        description="Records held per forwarder (syslog, HTTP) while it cannot deliver; beyond "
        "it the oldest are dropped (the database keeps them all).",
    )
    syslog: SyslogConfig = Field(default_factory=SyslogConfig)
    http: HTTPForwardConfig = Field(default_factory=HTTPForwardConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
