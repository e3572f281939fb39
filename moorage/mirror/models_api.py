"""The shapes of /api/v1/mirror/caches. The upstream password is write-only: accepted by create
and update, stored sealed, never part of an answer (``has_password`` says whether one is held)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class CacheUsage(BaseModel):
    bytes: int = Field(description="Linked blobs and manifests of the cache's repositories.")
    images: int = Field(description="Root manifests held (tagged or not listed by an index).")
    repositories: int
    last_pull: datetime | None = Field(None, description="When an image was last pulled.")


class CacheInfo(BaseModel):
    name: str = Field(description="The cache organization.")
    url: str = Field(description="The upstream registry.")
    username: str | None = None
    has_password: bool = False
    insecure: bool = False
    platforms: list[str] | None = Field(None, description="os/arch[/variant] kept; null: all.")
    staleness_seconds: int
    evict_after_days: int | None = None
    max_bytes: int | None = None
    updated_at: datetime
    usage: CacheUsage | None = Field(None, description="In the answer for one cache.")


class CacheCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=255, description="The organization to create as a cache.")
    url: str = Field(max_length=500, description="http(s)://host[:port] of the upstream.")
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(
        None, max_length=4096, description="Write-only; stored encrypted, never returned."
    )
    insecure: bool = False
    platforms: list[str] | None = Field(None, max_length=32)
    staleness_seconds: int = Field(300, ge=0, le=30 * 86400)
    evict_after_days: int | None = Field(None, ge=1, le=36500)
    max_bytes: int | None = Field(None, ge=1)


class CacheUpdate(BaseModel):
    """Fields left out are unchanged; ``null`` clears ``username`` (and the password),
    ``password``, ``platforms``, ``evict_after_days`` or ``max_bytes``."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, max_length=500)
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=4096, description="Write-only.")
    insecure: bool | None = None
    platforms: list[str] | None = Field(None, max_length=32)
    staleness_seconds: int | None = Field(None, ge=0, le=30 * 86400)
    evict_after_days: int | None = Field(None, ge=1, le=36500)
    max_bytes: int | None = Field(None, ge=1)
