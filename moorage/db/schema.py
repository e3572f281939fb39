"""Metadata tables (SQLAlchemy Core). Alembic migrations in db/migrations mirror this file.

Every row that garbage collection must reason about records when it was created, so that a sweeper
can spare work that is still in flight (an upload being committed, a link made moments ago).
"""

from __future__ import annotations

import sqlalchemy as sa

# Re-exported: the core tables are defined on the shared metadata (db/meta.py).
from .meta import Id as Id
from .meta import Timestamp as Timestamp
from .meta import metadata as metadata

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("namespace", sa.String(255), nullable=False, index=True),
    sa.Column("visibility", sa.String(16), nullable=False, server_default="private"),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    # Activity counters, bumped in batches off the request path (never one write per pull).
    sa.Column("pull_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("push_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_push_at", Timestamp, nullable=True),
    sa.Column("last_pull_at", Timestamp, nullable=True),
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
    # The process holding the lease, ``node#incarnation#pid`` (a restarted node frees its
    # previous incarnation's leases at start); the account that opened the session (caps).
    sa.Column("lease_holder", sa.String(200), nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Index("ix_uploads_updated_at", "updated_at"),
    sa.Index("ix_uploads_owner", "owner"),
    sa.Index("ix_uploads_repository_id", "repository_id"),
)

# --- identities and access ------------------------------------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(255), nullable=True),
    sa.Column("display_name", sa.String(255), nullable=True),
    # argon2id; NULL for directory (LDAP) users, whose password is checked by the directory.
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("source", sa.String(16), nullable=False, server_default="local"),
    sa.Column("external_id", sa.String(512), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("last_login_at", Timestamp, nullable=True),
    # Credential epoch: bumped on a password change or reset and on (dis|en)abling; issued
    # tokens carry it and older ones are refused (migration 0005).
    sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"),
    # Identity ids are never reused (SQLite AUTOINCREMENT; PostgreSQL sequences never go back):
    # a token naming a deleted account's id cannot match a later account (migration
    # security_0001).
    sqlite_autoincrement=True,
)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "organization_id",
        Id,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    # 'local', or 'ldap' for teams whose membership is synced from directory groups at login
    sa.Column("source", sa.String(16), nullable=False, server_default="local"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("organization_id", "name"),
)

team_members = sa.Table(
    "team_members",
    metadata,
    sa.Column("team_id", Id, sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_team_members_user_id", "user_id"),
)

# A role (read | write | admin) on an organization or one repository, for a user or a team.
permissions = sa.Table(
    "permissions",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "organization_id", Id, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True
    ),
    sa.Column(
        "repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=True
    ),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("team_id", Id, sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.CheckConstraint("(organization_id IS NULL) <> (repository_id IS NULL)", name="one_target"),
    sa.CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)", name="one_subject"),
    sa.Index("ix_permissions_user_id", "user_id"),
    sa.Index("ix_permissions_team_id", "team_id"),
    sa.Index("ix_permissions_repository_id", "repository_id"),
    sa.Index("ix_permissions_organization_id", "organization_id"),
)

# Robot accounts: CI credentials scoped to repositories or an organization, shown once.
robots = sa.Table(
    "robots",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(140), nullable=False, unique=True),  # "<namespace>+<name>"
    sa.Column("namespace", sa.String(64), nullable=False, index=True),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    # [{"repository": "acme/api" | "organization": "acme", "actions": ["pull", "push"]}]
    sa.Column("access", sa.JSON(), nullable=False),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    # Credential epoch, as users.token_version: bumped when the secret is regenerated and when
    # the robot is revoked, so that tokens issued before are refused (migration security_0001).
    sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)

# Token signing keys, shared by every node; several verify at once during a rotation.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kid", sa.String(64), nullable=False, unique=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("private_pem", sa.Text(), nullable=False),
    sa.Column("public_pem", sa.Text(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # NULL while the key signs; set when a newer key takes over (it still verifies until then
    # plus the overlap), after which it is refused.
    sa.Column("superseded_at", Timestamp, nullable=True),
)

# Failed-login counters per account and per client address (shared by all nodes).
auth_failures = sa.Table(
    "auth_failures",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("window_start", Timestamp, nullable=False),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("locked_until", Timestamp, nullable=True),
)

# Browser sessions for the web UI. ``id`` is the SHA-256 of the cookie value (a stolen database
# does not yield live cookies); every node reads the same table.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("client_addr", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(512), nullable=True),
    sa.Index("ix_web_sessions_user_id", "user_id"),
    sa.Index("ix_web_sessions_expires_at", "expires_at"),
)

# Personal access tokens for the REST API and the registry (``moorage_pat_<prefix>_<secret>``):
# shown once, stored hashed, found by their public prefix.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(128), nullable=False),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.UniqueConstraint("user_id", "name"),
    sqlite_autoincrement=True,  # bearer tokens issued for a token name its id
)

# Background work shared by every node: claimed with SELECT ... FOR UPDATE SKIP LOCKED on
# PostgreSQL (BEGIN IMMEDIATE on SQLite); a running job whose heartbeat goes stale is re-queued.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("dedupe_key", sa.String(255), nullable=True),
    sa.Column("payload", sa.JSON(), nullable=False),
    # queued | running | succeeded | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("run_after", Timestamp, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="5"),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("heartbeat_at", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("result", sa.JSON(), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    # {"done": n, "total": n|null, "message": str, "checkpoint": any}: what a running job
    # reported (API, UI, `moorage jobs`), and where a job re-run after its node died resumes.
    sa.Column("progress", sa.JSON(), nullable=True),
    sa.Index("ix_jobs_state_run_after", "state", "run_after"),
    sa.Index("ix_jobs_kind_dedupe_key", "kind", "dedupe_key"),
)

# One row per table that a process caches (moorage/db/confcache.py): a trigger on the table
# bumps its generation in the transaction of every change (migration confgen_0001).
config_generations = sa.Table(
    "config_generations",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
)

from . import audit_schema as _audit_schema  # noqa: E402,F401
