"""What the replication capability shows (REST API, UI, ``moorage replication``): remotes,
policies, executions and their per-tag tasks; and what it takes to create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Remote(Model):
    name: str
    url: str
    username: str | None
    has_password: bool = Field(description="Credentials are stored (encrypted); never shown.")
    insecure: bool = Field(description="TLS certificates are not verified.")
    has_ca: bool = Field(description="Extra trusted CA certificates are set.")
    site: bool = Field(description="Another Moorage site of a geo-replication topology.")
    peer_site_id: str | None = None
    description: str
    created_at: datetime
    checked_at: datetime | None = None
    check_ok: bool | None = None
    check_message: str | None = None


class RemoteCreate(Model):
    name: str
    url: str
    username: str | None = None
    password: str | None = None
    insecure: bool = False
    ca_pem: str | None = Field(None, description="PEM certificates of extra trusted CAs.")
    site: bool = False
    description: str = ""


class CheckResult(Model):
    remote: str
    ok: bool
    message: str
    api_version: str | None = None
    authenticated: bool | None = None
    peer_site_id: str | None = None


Direction = Literal["push", "pull"]


class Policy(Model):
    name: str
    remote: str
    direction: Direction
    source: str = Field(description="Repository pattern (* within a segment, ** across, {a,b}).")
    tags: str | None = Field(None, description="Tag pattern; all tags when empty.")
    exclude: str | None = Field(
        None, description="Excluded repositories (a pattern with '/') or tags (without)."
    )
    labels: dict[str, str] | None = Field(
        None, description="Image labels or manifest annotations the tag must carry ('*': any value)."
    )
    artifact_types: list[str] | None = None
    dest_namespace: str | None = None
    triggers: list[str] = Field(description="manual (always), event, cron:EXPR.")
    platforms: list[str] | None = None
    referrers: bool = True
    replicate_deletes: bool = False
    forward_replicated: bool = False
    bandwidth_limit: int | None = Field(None, description="Bytes per second, per node.")
    enabled: bool = True
    description: str = ""
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


class PolicyCreate(Model):
    name: str
    remote: str
    direction: Direction
    source: str
    tags: str | None = None
    exclude: str | None = None
    labels: dict[str, str] | None = None
    artifact_types: list[str] | None = None
    dest_namespace: str | None = None
    triggers: list[str] = Field(default_factory=lambda: ["manual"])
    platforms: list[str] | None = None
    referrers: bool = True
    replicate_deletes: bool = False
    forward_replicated: bool = False
    bandwidth_limit: int | None = None
    enabled: bool = True
    description: str = ""


class PolicyUpdate(Model):
    enabled: bool | None = None
    triggers: list[str] | None = None
    bandwidth_limit: int | None = None
    description: str | None = None


class Task(Model):
    id: int
    operation: Literal["copy", "delete"]
    src_repo: str
    dst_repo: str
    ref: str
    state: str = Field(description="queued, running, retrying, succeeded or failed.")
    outcome: str | None = Field(None, description="copied, unchanged, deleted, skipped, failed.")
    digest: str | None = None
    bytes: int = 0
    duration: float = 0
    attempts: int = 0
    error: str | None = None
    node: str | None = None
    detail: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Execution(Model):
    id: int
    policy: str
    trigger: str
    triggered_by: str | None
    state: str = Field(description="planning, running, succeeded, partial or failed.")
    total: int
    done: int
    succeeded: int
    failed: int
    bytes: int
    message: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    duration: float | None = None
    tasks: list[Task] | None = None


class RunResult(Model):
    execution: int
    policy: str
