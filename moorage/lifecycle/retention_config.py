"""Settings of retention policies (``retention.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Apply every retention policy on a schedule (the retention.run job on the "
        "shared queue); off, policies act only when run by hand (CLI, API, UI).",
    )
    interval_seconds: float = Field(
        86400.0, gt=0, description="How often the scheduled run applies every policy."
    )
