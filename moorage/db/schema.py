"""Metadata tables (SQLAlchemy Core). Alembic migrations in db/migrations mirror this file.

Every row that garbage collection must reason about records when it was created, so that a sweeper
can spare work that is still in flight (an upload being committed, a link made moments ago).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("namespace", sa.String(255), nullable=False, index=True),
    sa.Column("visibility", sa.String(16), nullable=False, server_default="private"),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(200), nullable=False, unique=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column(
        "repository_id",
        Id,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("blob_id", Id, sa.ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_repository_blobs_blob_id", "blob_id"),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("subject_digest", sa.String(200), nullable=True),
    sa.Column("config_digest", sa.String(200), nullable=True),
    sa.Column("annotations", sa.JSON(), nullable=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("repository_id", "digest"),
    sa.Index("ix_manifests_repository_id_subject_digest", "repository_id", "subject_digest"),
    sa.Index("ix_manifests_digest", "digest"),
)

manifest_references = sa.Table(
    "manifest_references",
    metadata,
    sa.Column(
        "manifest_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("digest", sa.String(200), primary_key=True),
    # 'blob' (config, layer) or 'manifest' (child of an index)
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Index("ix_manifest_references_digest", "digest"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("manifest_id", Id, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("repository_id", "name"),
    sa.Index("ix_tags_manifest_id", "manifest_id"),
)

# What a tag pointed to before it moved or was deleted: the "time machine" and GC's view of
# recently dropped manifests.
tag_history = sa.Table(
    "tag_history",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("manifest_digest", sa.String(200), nullable=False),
    sa.Column("replaced_at", Timestamp, nullable=False),
    sa.Index("ix_tag_history_repository_id_name", "repository_id", "name"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("hash_algorithm", sa.String(16), nullable=False),
    sa.Column("hash_state", sa.LargeBinary(), nullable=True),
    sa.Column("storage_state", sa.JSON(), nullable=False),
    # Lease held by the request currently writing (another node may take it over once stale).
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_uploads_updated_at", "updated_at"),
)
