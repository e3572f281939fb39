"""vulnerability database: OSV sources, records, the match index and vulnerability policies (moorage/scan/vulndb/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database
and never see them.

Revision ID: scanvuln_0001
Revises: scaninv_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scanvuln_0001"
down_revision: str | None = "scaninv_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vulndb_sources",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(2048), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("imported_at", Timestamp, nullable=True),
        sa.Column("changed_at", Timestamp, nullable=True),
        sa.Column("records", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_result", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(512), nullable=True),
        sa.Column("last_modified", sa.String(128), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.UniqueConstraint("name", name="uq_vulndb_sources_name"),
    )
    op.create_table(
        "vulndb_records",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("osv_id", sa.String(128), nullable=False),
        sa.Column("source_id", Id, nullable=True),
        sa.Column("modified", Timestamp, nullable=False),
        sa.Column("published", Timestamp, nullable=True),
        sa.Column("withdrawn", Timestamp, nullable=True),
        sa.Column("imported_at", Timestamp, nullable=False),
        sa.Column("summary", sa.String(512), nullable=False, server_default=""),
        sa.Column("aliases", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("upstream", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("links", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("severity", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("cvss_score", sa.Float(), nullable=True),
        sa.Column("cvss_vector", sa.String(256), nullable=False, server_default=""),
        sa.Column("ecosystems", sa.String(1024), nullable=False, server_default=""),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("osv_id", name="uq_vulndb_records_osv_id"),
    )
    op.create_table(
        "vulndb_affected",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "record_id",
            Id,
            sa.ForeignKey(
                "vulndb_records.id",
                ondelete="CASCADE",
                name="fk_vulndb_affected_record_id_vulndb_records",
            ),
            nullable=False,
        ),
        sa.Column("ecosystem", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_vulndb_affected_ecosystem_name", "vulndb_affected", ["ecosystem", "name"])
    op.create_index("ix_vulndb_affected_record_id", "vulndb_affected", ["record_id"])
    op.create_table(
        "vulnerability_policies",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("block_severity", sa.String(16), nullable=False),
        sa.Column("fixable_only", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("block_unscanned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("allow", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False, server_default=""),
        sa.UniqueConstraint("target", name="uq_vulnerability_policies_target"),
    )


def downgrade() -> None:
    op.drop_table("vulnerability_policies")
    op.drop_table("vulndb_affected")
    op.drop_table("vulndb_records")
    op.drop_table("vulndb_sources")
