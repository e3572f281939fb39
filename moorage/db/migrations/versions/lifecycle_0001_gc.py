"""lifecycle: garbage-collection review queues, blob tombstones, the pass log and tag
immutability rules (moorage/lifecycle/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database
and never see them (they queue no reviews; a pass still re-checks every decision).

Revision ID: lifecycle_0001
Revises: scanvuln_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "lifecycle_0001"
down_revision: str | None = "scanvuln_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gc_blob_review",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("review_after", Timestamp, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_gc_blob_review_review_after", "gc_blob_review", ["review_after"])
    op.create_index("ix_gc_blob_review_digest", "gc_blob_review", ["digest"])
    op.create_table(
        "gc_manifest_review",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("review_after", Timestamp, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_gc_manifest_review_repository_id_repositories"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_gc_manifest_review_review_after", "gc_manifest_review", ["review_after"])
    op.create_index(
        "ix_gc_manifest_review_repository_id_digest",
        "gc_manifest_review",
        ["repository_id", "digest"],
    )
    op.create_table(
        "gc_blob_tombstones",
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", Timestamp, nullable=False),
        sa.Column("bytes_deleted_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_gc_blob_tombstones")),
    )
    op.create_index("ix_gc_blob_tombstones_deleted_at", "gc_blob_tombstones", ["deleted_at"])
    op.create_table(
        "gc_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("manifests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("blobs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_gc_runs_started_at", "gc_runs", ["started_at"])
    op.create_table(
        "immutable_tag_rules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("pattern", sa.String(128), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint(
            "scope", "target", "pattern", name=op.f("uq_immutable_tag_rules_scope_target_pattern")
        ),
    )


def downgrade() -> None:
    op.drop_table("immutable_tag_rules")
    op.drop_table("gc_runs")
    op.drop_table("gc_blob_tombstones")
    op.drop_table("gc_manifest_review")
    op.drop_table("gc_blob_review")
