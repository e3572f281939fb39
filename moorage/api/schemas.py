"""Request bodies and query parameters of /api/v1 (validated here; described in OpenAPI)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..services.models import Model, RobotAccess, Role, Visibility

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def _iso_only(value: Any) -> Any:
    """Only ISO 8601 text (pydantic alone would also take numbers as Unix times)."""
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("must be an ISO 8601 time, e.g. 2024-05-01T12:00:00Z")
    return value


Time = Annotated[datetime, BeforeValidator(_iso_only)]

Limit = Field(None, ge=1, le=200, description="Items per page (1-200, default 50).")
Cursor = Field(
    None,
    max_length=1024,
    pattern=r"^[A-Za-z0-9_-]*$",
    description="`next_cursor` of the previous page.",
)
Name = Field(min_length=2, max_length=64, pattern=r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
Description = Field("", max_length=4096)


class PageQuery(Model):
    limit: int | None = Limit
    cursor: str | None = Cursor


class RepositoryQuery(PageQuery):
    q: str | None = Field(None, max_length=255, description="Part of the repository name.")
    namespace: str | None = Field(
        None, max_length=255, description="Organization or user owning the repositories."
    )
    visibility: Visibility | None = None


class UserQuery(PageQuery):
    q: str | None = Field(None, max_length=64, description="Part of the username.")


class RobotQuery(PageQuery):
    namespace: str | None = Field(
        None, max_length=64, description="Only the robots of this organization or user."
    )


class JobQuery(PageQuery):
    state: Literal["queued", "running", "succeeded", "failed"] | None = None
    kind: str | None = Field(None, max_length=64, description="A job kind, e.g. scan.manifest.")


class ReferrerQuery(PageQuery):
    artifact_type: str | None = Field(None, max_length=255)


class AuditQuery(Model):
    actor: str | None = Field(None, max_length=255)
    action: str | None = Field(None, max_length=64)
    repository: str | None = Field(None, max_length=255)
    result: Literal["success", "partial", "failure", "denied"] | None = None
    since: Time | None = Field(None, description="ISO 8601 time (UTC if no offset).")
    until: Time | None = Field(None, description="ISO 8601 time (UTC if no offset).")
    limit: int | None = Field(None, ge=1, le=1000, description="1-1000, default 100.")
    cursor: int | None = Field(None, ge=0, le=2**62, description="`next_cursor` of the last page.")


class AuditExportQuery(Model):
    format: Literal["jsonl", "csv"] = "jsonl"
    actor: str | None = Field(None, max_length=255)
    action: str | None = Field(None, max_length=64)
    repository: str | None = Field(None, max_length=255)
    result: Literal["success", "partial", "failure", "denied"] | None = None
    since: Time | None = None
    until: Time | None = None


class RepositoryUpdate(Model):
    description: str | None = Field(None, max_length=4096)
    visibility: Visibility | None = None


class RoleBody(Model):
    role: Role


class OrganizationCreate(Model):
    name: str = Name
    description: str = Description


class DescriptionBody(Model):
    description: str = Field(max_length=4096)


class TeamCreate(Model):
    name: str = Name
    description: str = Description
    members: list[str] = Field(default_factory=list, max_length=1000)


class UserCreate(Model):
    username: str = Name
    password: str = Field(min_length=8, max_length=1024)
    email: str | None = Field(None, max_length=255)
    display_name: str | None = Field(None, max_length=255)
    is_admin: bool = False


class UserUpdate(Model):
    email: str | None = Field(None, max_length=255)
    display_name: str | None = Field(None, max_length=255)
    # Absent or null: unchanged (email and display_name: null clears them).
    is_admin: bool | None = Field(None, description="System administrators only.")
    disabled: bool | None = Field(None, description="System administrators only.")
    password: str | None = Field(
        None,
        min_length=8,
        max_length=1024,
        description="System administrators only; not for one's own (use /password).",
    )


class PasswordChange(Model):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class RobotCreate(Model):
    name: str = Name
    description: str = Description
    access: list[RobotAccess] = Field(max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class RobotUpdate(Model):
    description: str | None = Field(None, max_length=4096)
    access: list[RobotAccess] | None = Field(None, max_length=100)


TokenScope = Literal["registry:pull", "registry:push", "registry:delete", "api:read", "api:write"]


class TokenCreate(Model):
    name: str = Name
    scopes: list[TokenScope] | None = Field(
        None, min_length=1, max_length=5, description="Default: all scopes."
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class ErrorDetail(Model):
    code: str
    message: str
    field: str | None = None


class ErrorBody(Model):
    error: ErrorDetail


class AuditPage(Model):
    events: list[dict[str, object]]
    next_cursor: int | None


class LoginBody(Model):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(Model):
    username: str
    csrf_token: str = Field(description="Send as X-CSRF-Token with every change.")
    expires_at: datetime
