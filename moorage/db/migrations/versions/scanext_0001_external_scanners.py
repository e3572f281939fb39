"""scanext: external scanners (Harbor pluggable scanner adapters) per organization, and which
scanner produced each scan result (moorage/scan/tables.py)

Expand only: a new table and a nullable column. Nodes of the previous release never read
either; they scan every organization with the built-in matcher, as before.

Revision ID: scanext_0001
Revises: lifecycle_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scanext_0001"
down_revision: str | None = "retention_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scan_scanners",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("adapter_url", sa.String(2048), nullable=False),
        sa.Column("auth_header", sa.String(128), nullable=True),
        sa.Column("credential", sa.Text(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False, server_default=""),
    )
    with op.batch_alter_table("scan_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scanner", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scan_results", schema=None) as batch_op:
        batch_op.drop_column("scanner")
    op.drop_table("scan_scanners")
