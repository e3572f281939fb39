"""The scan tables (migration scaninv_0001).

- ``scan_layers``: each layer's analysis record (moorage/scan/inventory.py), by layer digest —
  a base layer shared by many images is read once; ``version`` is the record format, an older
  one is analysed again.
- ``scan_results``: one row per manifest digest (content is immutable, so a digest's result
  holds in every repository that has it): status, the inventory, the findings and their
  summary as JSON.
- ``scan_settings``: per organization (namespace), whether pushes are scanned (NULL: the
  server's ``scanning.on_push``).
- ``scan_scanners`` (migration scanext_0001): per organization, an external scanner (a Harbor
  pluggable scanner adapter, API v1.2) used instead of the built-in matcher: its URL, the
  header it authenticates with and that header's value, encrypted (moorage/auth/keycrypt.py).
  No row: the built-in scanner. ``scan_results.scanner`` names what produced a result (NULL:
  the built-in scanner).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

scan_layers = sa.Table(
    "scan_layers",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(200), nullable=False, unique=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("record", sa.Text(), nullable=False),
    sa.Column("analyzed_at", Timestamp, nullable=False),
)

scan_results = sa.Table(
    "scan_results",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(200), nullable=False, unique=True),
    # pending | running | done | failed | unsupported
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("repository", sa.String(255), nullable=False),  # where it was last queued from
    sa.Column("queued_at", Timestamp, nullable=False),
    sa.Column("scanned_at", Timestamp, nullable=True),
    sa.Column("database_updated_at", Timestamp, nullable=True),
    sa.Column("inventory", sa.Text(), nullable=True),
    sa.Column("findings", sa.Text(), nullable=True),
    sa.Column("summary", sa.Text(), nullable=True),
    sa.Column("error", sa.String(1024), nullable=True),
    # "<name> <version> (<vendor>)" of the external adapter that produced the result; NULL:
    # the built-in scanner (migration scanext_0001)
    sa.Column("scanner", sa.String(255), nullable=True),
)

scan_settings = sa.Table(
    "scan_settings",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("on_push", sa.Boolean(), nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
)

scan_scanners = sa.Table(
    "scan_scanners",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("adapter_url", sa.String(2048), nullable=False),
    sa.Column("auth_header", sa.String(128), nullable=True),
    sa.Column("credential", sa.Text(), nullable=True),  # keycrypt-sealed header value
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False, server_default=""),
)
