"""Retention tables (migration retention_0001).

- ``retention_policies``: one policy per namespace (organization or user) or repository, its
  rules as the canonical rule strings (``keep-last=10``, ``untagged-after=7d``; see
  moorage/lifecycle/retention.py), and what its last run removed.
- ``retention_pulls``: when each manifest of a repository was last pulled, the clock of
  ``keep-pulled-within``. Written from the audit log's batches (a sink in the batch's own
  transaction), so a pull costs no write on the request path.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

retention_policies = sa.Table(
    "retention_policies",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(16), nullable=False),  # namespace | repository
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("rules", sa.Text(), nullable=False),  # JSON list of canonical rule strings
    sa.Column("updated_by", sa.String(255), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("last_run_at", Timestamp, nullable=True),
    sa.Column("last_run_tags", sa.Integer(), nullable=True),
    sa.Column("last_run_manifests", sa.Integer(), nullable=True),
    sa.UniqueConstraint("scope", "target"),
)

retention_pulls = sa.Table(
    "retention_pulls",
    metadata,
    sa.Column(
        "repository_id",
        Id,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("pulled_at", Timestamp, nullable=False),
)
