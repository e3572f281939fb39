"""Read and write models of the management layer (REST API, web UI and OpenAPI document).

The REST handlers return these as JSON and the OpenAPI document is generated from them, so the
description cannot drift from what is served; the web UI renders the same objects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Visibility = Literal["public", "private"]
Role = Literal["read", "write", "admin"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )


# --- repositories and images ----------------------------------------------------------------


class RepositorySummary(Model):
    name: str
    namespace: str
    visibility: Visibility
    description: str
    created_at: datetime
    tag_count: int
    pull_count: int
    push_count: int
    last_push_at: datetime | None
    last_pull_at: datetime | None


class RepositoryDetail(RepositorySummary):
    size: int = Field(description="Bytes of the distinct blobs linked into the repository.")
    permissions: list[str] = Field(
        description="What the caller may do here: pull, push, delete, admin."
    )


class HelmChartInfo(Model):
    """A Helm chart's metadata, from its config blob (Chart.yaml's fields)."""

    name: str
    version: str
    app_version: str | None = None
    description: str | None = None


ArtifactKindName = Literal[
    "image",
    "index",
    "helm-chart",
    "sbom",
    "signature",
    "attestation",
    "wasm",
    "ml-model",
    "artifact",
]
ARTIFACT_LABEL = Field(
    "Container image",
    description='For people: "Container image", "Helm chart", "SBOM (SPDX)", '
    '"Signature (cosign)", …; other artifacts: their artifact type.',
)


class TagInfo(Model):
    name: str
    digest: str
    media_type: str
    artifact_type: str | None
    artifact_kind: ArtifactKindName = Field(
        "image",
        description="What the manifest holds, from its media types (moorage/oci/artifacts.py): "
        "image, index, helm-chart, sbom, signature, attestation, wasm, ml-model or artifact.",
    )
    artifact_label: str = ARTIFACT_LABEL
    helm: HelmChartInfo | None = Field(None, description="Set for Helm charts.")
    platforms: list[str]
    size: int = Field(description="Manifest + config + layers (for an index: of all children).")
    created_at: datetime = Field(description="When the tag was first pushed.")
    pushed_at: datetime = Field(description="When the tag last moved to a new manifest.")


class Layer(Model):
    digest: str
    media_type: str
    size: int
    annotations: dict[str, str] | None = None


class HistoryEntry(Model):
    created: str | None = None
    created_by: str | None = None
    comment: str | None = None
    empty_layer: bool = False


class ImageConfig(Model):
    digest: str
    media_type: str
    size: int
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None
    created: str | None = None
    author: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    labels: dict[str, str] | None = None
    exposed_ports: list[str] | None = None
    history: list[HistoryEntry] = Field(default_factory=list)


class PlatformManifest(Model):
    digest: str
    media_type: str
    size: int
    platform: str | None
    artifact_type: str | None = None


class Referrer(Model):
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    annotations: dict[str, str] | None = None


class ImageDetail(Model):
    repository: str
    digest: str
    media_type: str
    artifact_type: str | None
    artifact_kind: ArtifactKindName = Field(
        "image",
        description="What the manifest holds, from its media types (moorage/oci/artifacts.py): "
        "image, index, helm-chart, sbom, signature, attestation, wasm, ml-model or artifact.",
    )
    artifact_label: str = ARTIFACT_LABEL
    helm: HelmChartInfo | None = Field(None, description="Set for Helm charts.")
    manifest_size: int
    size: int
    pushed_at: datetime
    tags: list[str]
    subject: str | None
    annotations: dict[str, str] | None
    config: ImageConfig | None
    layers: list[Layer]
    manifests: list[PlatformManifest] = Field(description="Children of an index.")
    platforms: list[str]
    referrers: list[Referrer]


# --- system ---------------------------------------------------------------------------------


class SystemInfo(Model):
    version: str
    storage_used: int
    counts: dict[str, int]


class NamespaceStorage(Model):
    namespace: str
    size: int


class DayActivity(Model):
    day: date
    pushes: int
    pulls: int


class RepositorySize(Model):
    name: str
    size: int


class Dashboard(Model):
    storage_per_namespace: list[NamespaceStorage]
    activity: list[DayActivity] = Field(description="The last 30 days, oldest first.")
    largest_repositories: list[RepositorySize]


class Health(Model):
    status: Literal["ok"]
    version: str


# --- identities and access ------------------------------------------------------------------


class Organization(Model):
    name: str
    description: str
    created_at: datetime
    team_count: int
    repository_count: int


class Team(Model):
    organization: str
    name: str
    description: str
    source: Literal["local", "ldap", "oidc"]
    created_at: datetime
    members: list[str]


class Grant(Model):
    """A role held by a user or a team (``org/team``) on an organization or a repository."""

    user: str | None = None
    team: str | None = None
    role: Role


class TeamGrant(Model):
    """A role a team holds on an organization or on one repository."""

    organization: str | None = None
    repository: str | None = None
    role: Role


class User(Model):
    username: str
    email: str | None
    display_name: str | None
    is_admin: bool
    source: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


class RobotAccess(Model):
    repository: str | None = None
    organization: str | None = None
    actions: list[Literal["pull", "push", "delete"]]


class Robot(Model):
    name: str
    namespace: str
    description: str
    access: list[RobotAccess]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None


class RobotWithSecret(Robot):
    secret: str = Field(description="Shown once; store it now.")


class AccessToken(Model):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None


class AccessTokenWithSecret(AccessToken):
    token: str = Field(description="moorage_pat_<prefix>_<secret>; shown once.")


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# --- background jobs --------------------------------------------------------------------------


class JobProgress(Model):
    done: int = 0
    total: int | None = None
    message: str = ""


class Job(Model):
    id: int
    kind: str
    state: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    max_attempts: int
    node: str | None = Field(None, description="The node running it (or that ran it last).")
    created_at: datetime
    run_after: datetime
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress | None = None
    result: Any = None
    error: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
