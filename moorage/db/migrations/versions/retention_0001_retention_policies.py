"""retention: retention policies per namespace or repository, and the last-pull clock of
manifests (moorage/lifecycle/retention_tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database;
they do not record pulls there, so ``keep-pulled-within`` sees their pulls once every node runs
this release (a pull counted late keeps a tag, never deletes one sooner).

Revision ID: retention_0001
Revises: lifecycle_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "retention_0001"
down_revision: str | None = "lifecycle_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("last_run_at", Timestamp, nullable=True),
        sa.Column("last_run_tags", sa.Integer(), nullable=True),
        sa.Column("last_run_manifests", sa.Integer(), nullable=True),
        sa.UniqueConstraint("scope", "target", name=op.f("uq_retention_policies_scope_target")),
    )
    op.create_table(
        "retention_pulls",
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("pulled_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_retention_pulls_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "digest", name=op.f("pk_retention_pulls")),
    )


def downgrade() -> None:
    op.drop_table("retention_pulls")
    op.drop_table("retention_policies")
