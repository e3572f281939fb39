"""config_generations: a change counter per cached configuration table

Webhook subscriptions, replication policies, scan-on-push settings and immutability rules are
read on every push; each process caches them (moorage/db/confcache.py) and checks one counter
per table, bumped by a trigger in the transaction of every INSERT, UPDATE or DELETE of the
table — whoever writes it, including the previous release's nodes, which know nothing of the
counter.

Expand only (a new table, triggers that write only that table): nodes of the previous release
keep working on the migrated database; their changes bump the counters too, so this release's
caches stay exact during a rolling upgrade.

Revision ID: confgen_0001
Revises: quota_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "confgen_0001"
down_revision: str | None = "quota_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Fixed here (a migration does not follow later code): moorage/db/confcache.py WATCHED.
WATCHED = ("webhooks", "replication_policies", "scan_settings", "immutable_tag_rules")

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION moorage_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_generations SET generation = generation + 1 WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END
$$
"""


def _triggers(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER config_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION moorage_config_changed()"
        ]
    bump = f"UPDATE config_generations SET generation = generation + 1 WHERE name = '{table}'"
    return [
        f"CREATE TRIGGER config_generation_{table}_{op_} AFTER {op_.upper()} ON {table} "
        f"BEGIN {bump}; END"
        for op_ in ("insert", "update", "delete")
    ]


def upgrade() -> None:
    table = op.create_table(
        "config_generations",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(table, [{"name": name, "generation": 0} for name in WATCHED])
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_FUNCTION)
    for name in WATCHED:
        for statement in _triggers(dialect, name):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in WATCHED:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS config_generation ON {name}")
        else:
            for op_ in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS config_generation_{name}_{op_}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS moorage_config_changed()")
    op.drop_table("config_generations")
