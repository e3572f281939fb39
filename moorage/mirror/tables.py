"""The mirror capability's tables (migration mirror_0001), on the shared metadata.

- ``mirror_caches``: an organization that is a pull-through cache of an upstream registry (URL,
  credentials sealed like replication's remotes, TLS, platform filter, staleness window,
  eviction settings).
- ``mirror_tags``: when each cached tag was last revalidated against the upstream (a HEAD at
  most once per staleness window).
- ``mirror_pulls``: when each cached manifest was last pulled (eviction's clock), written at most
  once per hour per manifest and node.

The cached content itself is ordinary repositories, manifests, tags and blobs of the core tables:
every read path, the API, the UI and the content rules see it as they see pushed content.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..db.meta import Id, Timestamp, metadata

mirror_caches = sa.Table(
    "mirror_caches",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(255), nullable=False, unique=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("username", sa.String(255), nullable=True),
    # enc:v1:... (moorage/auth/keycrypt.py, bound to "mirror-cache:<namespace>")
    sa.Column("secret", sa.Text(), nullable=True),
    sa.Column("insecure", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("platforms", sa.JSON(), nullable=True),  # ["linux/amd64", ...]; None: all
    sa.Column("staleness_seconds", sa.Integer(), nullable=False, server_default="300"),
    sa.Column("evict_after_days", sa.Integer(), nullable=True),
    sa.Column("max_bytes", sa.BigInteger(), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

mirror_tags = sa.Table(
    "mirror_tags",
    metadata,
    sa.Column("repository", sa.String(255), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("checked_at", Timestamp, nullable=False),
)

mirror_pulls = sa.Table(
    "mirror_pulls",
    metadata,
    sa.Column("repository", sa.String(255), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("pulled_at", Timestamp, nullable=False),
)
