"""Settings of the background job runner (``jobs.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class JobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Run background jobs on this node. Every node may (exactly one takes each "
        "job); switch off on nodes that should only serve requests.",
    )
    concurrency: int = Field(2, ge=1, le=64, description="Jobs one node runs at once.")
    poll_seconds: float = Field(5.0, gt=0, description="How often a node looks for due jobs.")
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often a node marks its running jobs as alive."
    )
    stale_seconds: float = Field(
        60.0,
        gt=0,
        description="A running job whose node has not heart-beaten for this long is re-queued "
        "(the node is presumed dead).",
    )
    max_attempts: int = Field(5, ge=1, description="Attempts before a job is marked failed.")
    retry_base_seconds: float = Field(
        10.0, gt=0, description="First retry delay; doubles with every failed attempt."
    )
    retry_max_seconds: float = Field(3600.0, gt=0, description="Longest retry delay.")
    keep_finished_days: float = Field(
        7.0, gt=0, description="Finished (succeeded or failed) jobs are deleted after this."
    )
