"""uploads.lease_holder and uploads.owner: who holds a session's lease, who opened it

``lease_holder`` names the process holding the lease (``node#incarnation#pid``), so that a
restarted node frees its previous incarnation's leases at start instead of making clients wait
for them to expire. ``owner`` is the account that opened the session, for the caps on open
sessions per user (and the index on ``repository_id`` for the cap per repository).

Expand only (nullable columns, indexes): nodes of the previous release keep working on the
migrated database; their leases simply expire as before.

Revision ID: uploads_0001
Revises: security_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "uploads_0001"
down_revision: str | None = "security_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("lease_holder", sa.String(200), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
    op.create_index("ix_uploads_owner", "uploads", ["owner"])
    op.create_index("ix_uploads_repository_id", "uploads", ["repository_id"])


def downgrade() -> None:
    op.drop_index("ix_uploads_repository_id", table_name="uploads")
    op.drop_index("ix_uploads_owner", table_name="uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("owner")
        batch.drop_column("lease_holder")
