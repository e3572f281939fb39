"""mirror: pull-through cache organizations, tag revalidation times and pull times
(moorage/mirror/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database
and never see them.

Revision ID: mirror_0001
Revises: hooks_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mirror_0001"
down_revision: str | None = "hooks_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mirror_caches",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("insecure", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("platforms", sa.JSON(), nullable=True),
        sa.Column("staleness_seconds", sa.Integer(), nullable=False, server_default="300"),
        sa.Column("evict_after_days", sa.Integer(), nullable=True),
        sa.Column("max_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("namespace", name="uq_mirror_caches_namespace"),
    )
    op.create_table(
        "mirror_tags",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("checked_at", Timestamp, nullable=False),
    )
    op.create_table(
        "mirror_pulls",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("pulled_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mirror_pulls")
    op.drop_table("mirror_tags")
    op.drop_table("mirror_caches")
