"""Audit log tables: an append-only, hash-chained event log and its chain anchor.

``audit_events.id`` is the chain position: ids are assigned by the writer, under the chain lock,
as ``head_id + 1`` (no sequence), so they are gapless and a removed record leaves a visible hole.
``audit_anchor`` has exactly one row (id 1): the head of the chain (last id and hash, updated in
every append transaction, so that records cut from the end are detected) and the retention anchor
(the last pruned id and its hash, the accepted ``prev_hash`` of the first remaining record).
"""

from __future__ import annotations

import sqlalchemy as sa

from .meta import Id, Timestamp, metadata

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    # user | robot | anonymous | system
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("client_addr", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(512), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("repository", sa.String(255), nullable=True),
    sa.Column("tag", sa.String(128), nullable=True),
    sa.Column("digest", sa.String(200), nullable=True),
    # success | failure | denied
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    # Canonical JSON text (sorted keys, compact, ASCII): hashed byte for byte as stored.
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_events_occurred_at", "occurred_at"),
    sa.Index("ix_audit_events_actor_id", "actor", "id"),
    sa.Index("ix_audit_events_action_id", "action", "id"),
    sa.Index("ix_audit_events_repository_id", "repository", "id"),
)

audit_anchor = sa.Table(
    "audit_anchor",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("head_id", sa.BigInteger(), nullable=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("pruned_through_id", sa.BigInteger(), nullable=False),
    sa.Column("pruned_hash", sa.String(64), nullable=False),
    sa.Column("pruned_count", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
