"""replication: this site's id, remote registries, policies, executions with their per-tag
tasks, and the identity bases of geo-replication (moorage/replication/tables.py)

Expand only (new tables): nodes of the previous release keep working on the migrated database.

Revision ID: replication_0001
Revises: trust_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "replication_0001"
down_revision: str | None = "trust_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "replication_site",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replication_site"),
    )
    op.create_table(
        "replication_remotes",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("insecure", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("site", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("peer_site_id", sa.String(64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("checked_at", Timestamp, nullable=True),
        sa.Column("check_ok", sa.Boolean(), nullable=True),
        sa.Column("check_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_replication_remotes"),
        sa.UniqueConstraint("name", name="uq_replication_remotes_name"),
    )
    op.create_table(
        "replication_policies",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("remote_id", Id, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("tags", sa.String(512), nullable=True),
        sa.Column("exclude", sa.String(512), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("artifact_types", sa.JSON(), nullable=True),
        sa.Column("dest_namespace", sa.String(255), nullable=True),
        sa.Column("on_event", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("cron", sa.String(128), nullable=True),
        sa.Column("cron_last_at", Timestamp, nullable=True),
        sa.Column("platforms", sa.JSON(), nullable=True),
        sa.Column("referrers", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("replicate_deletes", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("forward_replicated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("bandwidth_limit", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("needs_catchup", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["remote_id"],
            ["replication_remotes.id"],
            name="fk_replication_policies_remote_id_replication_remotes",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replication_policies"),
        sa.UniqueConstraint("name", name="uq_replication_policies_name"),
    )
    with op.batch_alter_table("replication_policies") as batch:
        batch.create_index("ix_replication_policies_remote_id", ["remote_id"], unique=False)
    op.create_table(
        "replication_executions",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("policy_id", Id, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("triggered_by", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("succeeded", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["replication_policies.id"],
            name="fk_replication_executions_policy_id_replication_policies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replication_executions"),
    )
    with op.batch_alter_table("replication_executions") as batch:
        batch.create_index("ix_replication_executions_policy_id", ["policy_id"], unique=False)
        batch.create_index("ix_replication_executions_state", ["state"], unique=False)
    op.create_table(
        "replication_tasks",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("execution_id", Id, nullable=False),
        sa.Column("operation", sa.String(8), nullable=False),
        sa.Column("src_repo", sa.String(255), nullable=False),
        sa.Column("dst_repo", sa.String(255), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("expect_digest", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("digest", sa.String(200), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("duration", sa.Float(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("transient", sa.Boolean(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("node", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["replication_executions.id"],
            name="fk_replication_tasks_execution_id_replication_executions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replication_tasks"),
    )
    with op.batch_alter_table("replication_tasks") as batch:
        batch.create_index(
            "ix_replication_tasks_execution_id_state", ["execution_id", "state"], unique=False
        )
    op.create_table(
        "replication_identity_bases",
        sa.Column("peer_site_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("peer_site_id", name="pk_replication_identity_bases"),
    )


def downgrade() -> None:
    op.drop_table("replication_identity_bases")
    with op.batch_alter_table("replication_tasks") as batch:
        batch.drop_index("ix_replication_tasks_execution_id_state")
    op.drop_table("replication_tasks")
    with op.batch_alter_table("replication_executions") as batch:
        batch.drop_index("ix_replication_executions_state")
        batch.drop_index("ix_replication_executions_policy_id")
    op.drop_table("replication_executions")
    with op.batch_alter_table("replication_policies") as batch:
        batch.drop_index("ix_replication_policies_remote_id")
    op.drop_table("replication_policies")
    op.drop_table("replication_remotes")
    op.drop_table("replication_site")
