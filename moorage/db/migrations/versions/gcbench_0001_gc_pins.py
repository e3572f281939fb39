"""gcbench: pull-by-digest pins of untagged manifests (moorage/lifecycle/pins.py), and two
indexes for the collector's queries (moorage/lifecycle/gc_indexes.py)

Expand only (a new table, new indexes): nodes of the previous release never read or write the
table (their passes simply do not spare manifests pulled by digest); the indexes only speed up
what they already run.

Revision ID: gcbench_0001
Revises: lifecycle_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gcbench_0001"
down_revision: str | None = "scanext_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gc_manifest_pulls",
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("pulled_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_gc_manifest_pulls_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "digest", name=op.f("pk_gc_manifest_pulls")),
    )
    op.create_index("ix_gc_manifest_pulls_pulled_at", "gc_manifest_pulls", ["pulled_at"])
    pending = sa.text("bytes_deleted_at IS NULL")
    op.create_index(
        "ix_gc_blob_tombstones_pending",
        "gc_blob_tombstones",
        ["deleted_at"],
        sqlite_where=pending,
        postgresql_where=pending,
    )
    op.create_index(
        "ix_tag_history_repository_id_manifest_digest",
        "tag_history",
        ["repository_id", "manifest_digest"],
    )


def downgrade() -> None:
    op.drop_index("ix_tag_history_repository_id_manifest_digest", table_name="tag_history")
    op.drop_index("ix_gc_blob_tombstones_pending", table_name="gc_blob_tombstones")
    op.drop_table("gc_manifest_pulls")
