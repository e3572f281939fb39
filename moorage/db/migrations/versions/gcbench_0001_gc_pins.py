"""gcbench: pull-by-digest pins of untagged manifests (moorage/lifecycle/pins.py)

Expand only (a new table): nodes of the previous release never read or write it; their passes
simply do not spare manifests pulled by digest.

Revision ID: gcbench_0001
Revises: lifecycle_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gcbench_0001"
down_revision: str | None = "lifecycle_0001"
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


def downgrade() -> None:
    op.drop_table("gc_manifest_pulls")
