"""The vulnerability database tables (migration scanvuln_0001).

- ``vulndb_sources``: each imported source (a path, a URL, a configured feed): when it was
  imported, when its import last changed anything, its counts, its HTTP validators.
- ``vulndb_records``: one row per OSV record, with what a finding shows; ``raw`` keeps the
  record (zlib-compressed JSON) for detail views and re-derivation.
- ``vulnerability_policies``: per organization or repository, which findings block pulls and
  the allow-list (JSON: id, expiry date, reason).
- ``vulndb_affected``: the match index, one row per (record, affected package): ecosystem key
  and normalized name (the hot lookup), and the compact ranges/versions (JSON text).
"""

from __future__ import annotations

import sqlalchemy as sa

from ...db.meta import Id, Timestamp, metadata

vulndb_sources = sa.Table(
    "vulndb_sources",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(2048), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # zip | directory | url | file
    sa.Column("imported_at", Timestamp, nullable=True),
    sa.Column("changed_at", Timestamp, nullable=True),
    sa.Column("records", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_result", sa.Text(), nullable=True),  # JSON: added/updated/unchanged/...
    sa.Column("etag", sa.String(512), nullable=True),
    sa.Column("last_modified", sa.String(128), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("error", sa.String(1024), nullable=True),
    sa.UniqueConstraint("name", name="uq_vulndb_sources_name"),
)

vulndb_records = sa.Table(
    "vulndb_records",
    metadata,
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

vulndb_affected = sa.Table(
    "vulndb_affected",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "record_id", Id, sa.ForeignKey("vulndb_records.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("ecosystem", sa.String(128), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Index("ix_vulndb_affected_ecosystem_name", "ecosystem", "name"),
    sa.Index("ix_vulndb_affected_record_id", "record_id"),
)

vulnerability_policies = sa.Table(
    "vulnerability_policies",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(16), nullable=False),  # namespace | repository
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("block_severity", sa.String(16), nullable=False),  # critical|high|medium|low|none
    sa.Column("fixable_only", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("block_unscanned", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("allow", sa.Text(), nullable=False, server_default="[]"),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False, server_default=""),
    sa.UniqueConstraint("target", name="uq_vulnerability_policies_target"),
)
