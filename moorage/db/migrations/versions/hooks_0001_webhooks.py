"""webhooks: subscriptions, the delivery outbox and the attempt log (moorage/hooks/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database
and never see them.

Revision ID: hooks_0001
Revises: replication_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "hooks_0001"
down_revision: str | None = "replication_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.String(128), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("uid", name="uq_webhooks_uid"),
    )
    op.create_index("ix_webhooks_scope_target", "webhooks", ["scope", "target"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column(
            "webhook_id",
            Id,
            sa.ForeignKey(
                "webhooks.id",
                ondelete="CASCADE",
                name="fk_webhook_deliveries_webhook_id_webhooks",
            ),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("repository", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.UniqueConstraint("uid", name="uq_webhook_deliveries_uid"),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_id_id", "webhook_deliveries", ["webhook_id", "id"]
    )
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            Id,
            sa.ForeignKey(
                "webhook_deliveries.id",
                ondelete="CASCADE",
                name="fk_webhook_attempts_delivery_id_webhook_deliveries",
            ),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(512), nullable=True),
        sa.Column("node", sa.String(255), nullable=False, server_default=""),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
