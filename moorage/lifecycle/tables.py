"""Garbage-collection tables (migration lifecycle_0001).

Review queues are filled in the transactions of the changes that can make garbage (a tag moved
or deleted, a manifest deleted or pushed untagged, an upload finished, a repository deleted),
each row with the time its review is first due. Workers on any node claim due rows with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's BEGIN IMMEDIATE serializes) and re-check each
decision under row locks in the transaction that deletes. Blob bytes are deleted after the rows,
from tombstones (docs/gc.md explains why, and the races).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

# Append-only: an event adds a row even when one for the same object is queued (a row a
# collector has claimed may be deleted on a decision taken before the event; the new row makes
# sure the object is looked at again). Duplicates cost one more review each.
gc_blob_review = sa.Table(
    "gc_blob_review",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("review_after", Timestamp, nullable=False),
    # upload | manifest_deleted | repository_deleted | link
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_gc_blob_review_review_after", "review_after"),
    sa.Index("ix_gc_blob_review_digest", "digest"),
)

gc_manifest_review = sa.Table(
    "gc_manifest_review",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("review_after", Timestamp, nullable=False),
    # tag_moved | tag_deleted | untagged_push | parent_deleted | subject_deleted
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_gc_manifest_review_review_after", "review_after"),
    sa.Index("ix_gc_manifest_review_repository_id_digest", "repository_id", "digest"),
)

# A blob whose row GC deleted: its bytes are deleted later (bytes_deleted_at set then). An
# upload of the same digest that commits meanwhile removes the tombstone in its own transaction
# and, when the bytes were deleted, checks that its own bytes are still there.
gc_blob_tombstones = sa.Table(
    "gc_blob_tombstones",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("deleted_at", Timestamp, nullable=False),
    sa.Column("bytes_deleted_at", Timestamp, nullable=True),
    sa.Index("ix_gc_blob_tombstones_deleted_at", "deleted_at"),
)

# One row per pass: what it removed (or would have, for a dry run).
gc_runs = sa.Table(
    "gc_runs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("trigger", sa.String(16), nullable=False),  # job | cli | api
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("dry_run", sa.Boolean(), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("manifests", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("blobs", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index("ix_gc_runs_started_at", "started_at"),
)

# Tag immutability: tags of a namespace (organization or user) or of one repository whose name
# matches a glob pattern cannot be moved or deleted once they exist (moorage/lifecycle/
# immutable.py; a system administrator's change goes through, audited as an override).
immutable_tag_rules = sa.Table(
    "immutable_tag_rules",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(16), nullable=False),  # namespace | repository
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("pattern", sa.String(128), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("scope", "target", "pattern"),
)


# Migration gcbench_0001. Keyed by repository id (a repository deleted takes its pins along).
gc_manifest_pulls = sa.Table(
    "gc_manifest_pulls",
    metadata,
    sa.Column(
        "repository_id",
        Id,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("pulled_at", Timestamp, nullable=False),
    sa.Index("ix_gc_manifest_pulls_pulled_at", "pulled_at"),
)

# One row per namespace with a quota (migration quota_0001). No row: no quota.
namespace_quotas = sa.Table(
    "namespace_quotas",
    metadata,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
    # An upper bound of the usage, kept by the pushes (see QuotaRule); NULL: not known yet.
    sa.Column("usage_bound", sa.BigInteger(), nullable=True),
    sa.Column("updated_by", sa.String(255), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)
