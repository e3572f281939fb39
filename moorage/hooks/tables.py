"""The webhook tables (migration hooks_0001): subscriptions, the delivery outbox and the
attempt log.

A delivery row is written in the transaction of the change it announces (a push, a delete),
or in the audit batch that records pulls, together with the job that sends it; so no event is
lost or invented, and whichever node claims the job sends it. The rendered body is kept with
the delivery: every attempt sends the same bytes (a receiver deduplicates by event id), only
the signature's timestamp is fresh.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(36), nullable=False, unique=True),
    # 'namespace' (an organization or a user's namespace) or 'repository'
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.String(128), nullable=False),  # comma-separated kinds
    sa.Column("format", sa.String(16), nullable=False),
    # keycrypt.seal_text(auth.token.key_encryption_secret, "webhook:<uid>", secret)
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_webhooks_scope_target", "scope", "target"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(36), nullable=False, unique=True),
    sa.Column("webhook_id", Id, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("event_count", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("repository", sa.String(255), nullable=True),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    # queued → (retrying →)* succeeded | failed
    sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.String(512), nullable=True),
    sa.Column("job_id", Id, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    sa.Index("ix_webhook_deliveries_created_at", "created_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        Id,
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=True),  # HTTP status; NULL: no answer
    sa.Column("error", sa.String(512), nullable=True),
    sa.Column("node", sa.String(255), nullable=False, server_default=""),
    sa.Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)
