"""The one SQLAlchemy MetaData every table is defined on (db/schema.py for the core,
db/audit_schema.py for the audit log, and each capability's own tables module), with the
naming convention and the column types shared by all of them.

Alembic (db/migrations/env.py) compares migrations with this metadata after importing
db/schema.py and moorage/capabilities.py, which load every table.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
