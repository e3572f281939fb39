"""robots.token_version, and identity ids that are never reused

robots.token_version is a credential epoch like users.token_version: regenerating a robot's
secret or revoking it bumps it, and tokens issued before (access and refresh) are refused.

SQLite hands a freed INTEGER PRIMARY KEY to the next row unless the table is AUTOINCREMENT: a
token of a deleted user or robot would name the id of a later account. users, robots and
api_tokens are rebuilt as AUTOINCREMENT tables on SQLite (a single node, so a rebuild is safe;
the migration runs with foreign keys off, as Alembic's batch mode needs). PostgreSQL sequences
never hand out a value twice: there the migration only adds the column (expand-only, nodes of
the previous release keep working).

Revision ID: security_0001
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "security_0001"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REBUILT = ("users", "robots", "api_tokens")


def upgrade() -> None:
    with op.batch_alter_table("robots") as batch:
        batch.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
    if op.get_bind().dialect.name == "sqlite":
        for table in REBUILT:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass


def downgrade() -> None:
    with op.batch_alter_table("robots") as batch:
        batch.drop_column("token_version")
