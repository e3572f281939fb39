"""scan inventory: per-layer analysis cache, per-manifest results, per-organization settings
(moorage/scan/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database
and never see them.

Revision ID: scaninv_0001
Revises: mirror_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scaninv_0001"
down_revision: str | None = "mirror_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scan_layers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("analyzed_at", Timestamp, nullable=False),
        sa.UniqueConstraint("digest", name="uq_scan_layers_digest"),
    )
    op.create_table(
        "scan_results",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("queued_at", Timestamp, nullable=False),
        sa.Column("scanned_at", Timestamp, nullable=True),
        sa.Column("database_updated_at", Timestamp, nullable=True),
        sa.Column("inventory", sa.Text(), nullable=True),
        sa.Column("findings", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.UniqueConstraint("digest", name="uq_scan_results_digest"),
    )
    op.create_table(
        "scan_settings",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("on_push", sa.Boolean(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scan_settings")
    op.drop_table("scan_results")
    op.drop_table("scan_layers")
