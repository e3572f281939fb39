"""content trust: trust configuration per namespace, pull policies, signature artifacts found on
push and their verification results per trust-config version, and the verdict-cache generation

Expand only (new tables): nodes of the previous release keep working on the migrated database.

Revision ID: trust_0001
Revises: uploads_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "trust_0001"
down_revision: str | None = "uploads_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trust_namespaces",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("sigstore_trusted_root", sa.Text(), nullable=True),
        sa.Column("notation_policy", sa.Text(), nullable=True),
        sa.Column("require_tlog_for_keys", sa.Boolean(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("namespace", name="pk_trust_namespaces"),
    )
    op.create_table(
        "trust_entries",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_entries"),
        sa.UniqueConstraint(
            "namespace", "kind", "name", name="uq_trust_entries_namespace_kind_name"
        ),
    )
    op.create_table(
        "trust_policies",
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("require_signature", sa.Boolean(), nullable=False),
        sa.Column("signers", sa.JSON(), nullable=False),
        sa.Column("require_all", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("docker_reference", sa.String(512), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_trust_policies"),
    )
    op.create_table(
        "trust_artifacts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("repository_id", Id, nullable=False),
        sa.Column("manifest_id", Id, nullable=False),
        sa.Column("signature_digest", sa.String(200), nullable=False),
        sa.Column("subject_digest", sa.String(200), nullable=False),
        sa.Column("form", sa.String(32), nullable=False),
        sa.Column("tag", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_artifacts"),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name="fk_trust_artifacts_repository_id_repositories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name="fk_trust_artifacts_manifest_id_manifests",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "repository_id",
            "signature_digest",
            "subject_digest",
            name="uq_trust_artifacts_signature",
        ),
    )
    op.create_index(
        "ix_trust_artifacts_repository_id_subject_digest",
        "trust_artifacts",
        ["repository_id", "subject_digest"],
    )
    op.create_index("ix_trust_artifacts_manifest_id", "trust_artifacts", ["manifest_id"])
    op.create_table(
        "trust_results",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("artifact_id", Id, nullable=False),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("signer", sa.JSON(), nullable=True),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("signed_at", Timestamp, nullable=True),
        sa.Column("docker_reference", sa.String(512), nullable=True),
        sa.Column("verified_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_results"),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["trust_artifacts.id"],
            name="fk_trust_results_artifact_id_trust_artifacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "artifact_id",
            "config_version",
            "position",
            name="uq_trust_results_artifact_id_config_version_position",
        ),
    )
    state = op.create_table(
        "trust_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_trust_state"),
    )
    op.bulk_insert(state, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("trust_state")
    op.drop_table("trust_results")
    op.drop_index("ix_trust_artifacts_manifest_id", table_name="trust_artifacts")
    op.drop_index("ix_trust_artifacts_repository_id_subject_digest", table_name="trust_artifacts")
    op.drop_table("trust_artifacts")
    op.drop_table("trust_policies")
    op.drop_table("trust_entries")
    op.drop_table("trust_namespaces")
