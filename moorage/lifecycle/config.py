"""Settings of online garbage collection (``gc.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GCConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Collect garbage continuously (a job on the shared queue)."
    )
    interval_seconds: float = Field(
        60.0, gt=0, description="How often a pass over the due review rows is queued."
    )
    grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="A blob linked, uploaded or dereferenced less than this ago is never "
        "collected (and a review is first due this long after the event that queued it).",
    )
    untagged_seconds: float = Field(
        86400.0,
        ge=0,
        description="An untagged manifest (not listed by an index, not a referrer of a present "
        "manifest) is removed this long after it was pushed or last untagged.",
    )
    history_days: float = Field(
        7.0,
        ge=0,
        description="Time machine: a manifest a tag pointed to before it moved or was deleted "
        "stays restorable this many days (GC keeps it).",
    )
    pin_pulled_within_seconds: float = Field(
        7 * 86400.0,
        ge=0,
        description="An untagged manifest pulled by digest less than this ago is kept (the "
        "pull is recorded from the audit log's batches, never on the pull's path; 0: no pins).",
    )
    batch_size: int = Field(
        2000, ge=1, le=10000, description="Review rows one transaction claims and decides."
    )
    delete_concurrency: int = Field(
        16, ge=1, le=256, description="Storage deletes run at once (filesystem, single S3 keys)."
    )
