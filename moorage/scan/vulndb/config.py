"""Settings of the vulnerability database (``vulndb.*``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class VulnDBConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(
        default_factory=list,
        description="OSV sources refreshed on a schedule (a background job, one node at a "
        "time): URLs of osv.dev's per-ecosystem all.zip exports (e.g. "
        "https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip), zip files or "
        "directories of OSV JSON. In the environment: comma-separated. Empty: only "
        "`moorage vulndb import` fills the database.",
    )
    refresh_hours: float = Field(
        24.0, gt=0, le=24 * 30, description="How often the configured sources are refreshed."
    )
    http_timeout: float = Field(
        300.0, gt=0, le=3600, description="Seconds one download of a source may take."
    )

    @field_validator("sources", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v
