"""The replication capability's tables (migration replication_0001), on the shared metadata.

- ``replication_site``: this site's identity (one row): geo-replication tells sites apart by it.
- ``replication_remotes``: registries registered once (URL, encrypted credentials, TLS).
- ``replication_policies``: what to copy where, and when (manual, event, cron).
- ``replication_executions``: one run of a policy, the sum of its tasks.
- ``replication_tasks``: one tag (or digest) of an execution, its job and its outcome.
- ``replication_identity_bases``: per peer site, the identity snapshot both sides last agreed
  on (the base of the three-way merge that replicates users, organizations, teams and grants).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

replication_site = sa.Table(
    "replication_site",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),  # always 1
    sa.Column("site_id", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

replication_remotes = sa.Table(
    "replication_remotes",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("username", sa.String(255), nullable=True),
    # enc:v1:... (moorage/auth/keycrypt.py, bound to "replication-remote:<id>")
    sa.Column("secret", sa.Text(), nullable=True),
    sa.Column("insecure", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("ca_pem", sa.Text(), nullable=True),
    # Another Moorage site of a geo-replication topology (identities are synced with it, and
    # what its account pushes here is not forwarded by event triggers).
    sa.Column("site", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("peer_site_id", sa.String(64), nullable=True),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("checked_at", Timestamp, nullable=True),
    sa.Column("check_ok", sa.Boolean(), nullable=True),
    sa.Column("check_message", sa.Text(), nullable=True),
)

replication_policies = sa.Table(
    "replication_policies",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("remote_id", Id, sa.ForeignKey("replication_remotes.id"), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),  # push | pull
    sa.Column("source", sa.String(512), nullable=False),  # repository pattern
    sa.Column("tags", sa.String(512), nullable=True),
    sa.Column("exclude", sa.String(512), nullable=True),
    sa.Column("labels", sa.JSON(), nullable=True),  # {"key": "value" | "*"}
    sa.Column("artifact_types", sa.JSON(), nullable=True),  # ["application/vnd..."]
    sa.Column("dest_namespace", sa.String(255), nullable=True),
    sa.Column("on_event", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("cron", sa.String(128), nullable=True),
    sa.Column("cron_last_at", Timestamp, nullable=True),
    sa.Column("platforms", sa.JSON(), nullable=True),
    sa.Column("referrers", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("replicate_deletes", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("forward_replicated", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("bandwidth_limit", sa.BigInteger(), nullable=True),  # bytes/s per node
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    # An event task failed because the remote was away: a catch-up run is due once it is back.
    sa.Column("needs_catchup", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_replication_policies_remote_id", "remote_id"),
)

replication_executions = sa.Table(
    "replication_executions",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "policy_id",
        Id,
        sa.ForeignKey("replication_policies.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("trigger", sa.String(16), nullable=False),  # manual | event | cron | catch-up
    sa.Column("triggered_by", sa.String(255), nullable=True),
    # planning | running | succeeded | partial | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("succeeded", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Index("ix_replication_executions_policy_id", "policy_id"),
    sa.Index("ix_replication_executions_state", "state"),
)

replication_tasks = sa.Table(
    "replication_tasks",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "execution_id",
        Id,
        sa.ForeignKey("replication_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("operation", sa.String(8), nullable=False),  # copy | delete
    sa.Column("src_repo", sa.String(255), nullable=False),
    sa.Column("dst_repo", sa.String(255), nullable=False),
    sa.Column("ref", sa.String(200), nullable=False),  # tag or digest
    # For a delete: the digest the source tag pointed to (the destination's tag is deleted
    # only while it still points there).
    sa.Column("expect_digest", sa.String(200), nullable=True),
    # queued | running | retrying | succeeded | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=True),  # copied | unchanged | deleted | ...
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
    sa.Index("ix_replication_tasks_execution_id_state", "execution_id", "state"),
)

replication_identity_bases = sa.Table(
    "replication_identity_bases",
    metadata,
    sa.Column("peer_site_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("snapshot", sa.JSON(), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
