"""quota: storage quotas per namespace (moorage/lifecycle/quota.py)

Expand only (a new table): nodes of the previous release keep working on the migrated database
and never read it (they enforce no quota).

Revision ID: quota_0001
Revises: lifecycle_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "quota_0001"
down_revision: str | None = "gcbench_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "namespace_quotas",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("usage_bound", sa.BigInteger(), nullable=True),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_namespace_quotas")),
    )


def downgrade() -> None:
    op.drop_table("namespace_quotas")
