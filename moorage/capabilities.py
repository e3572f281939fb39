"""The capability packages this build of Moorage runs, in order (policy rules have their own
order, moorage/services/rules.py; this order is that of menus and command listings).

A new capability adds one line here and keeps everything else in its own package
(moorage/capability.py says what a package provides). Its database tables are defined in its
own module on ``moorage.db.schema.metadata`` and imported by its wiring, so importing this
module also loads every table Alembic must know.
"""

from __future__ import annotations

import sqlalchemy as sa

from .capability import Capability


def installed() -> tuple[Capability, ...]:
    from .hooks.wiring import CAPABILITY as HOOKS
    from .lifecycle.wiring import CAPABILITY as LIFECYCLE
    from .mirror.wiring import MIRROR
    from .replication.wiring import REPLICATION
    from .scan.vulndb.wiring import CAPABILITY as VULNDB
    from .scan.wiring import SCAN
    from .trust.wiring import TRUST

    # vulndb before scan: it registers the matcher (rt.services["scan.matcher"]) scans use
    return (TRUST, REPLICATION, MIRROR, HOOKS, VULNDB, SCAN, LIFECYCLE)


def all_metadata() -> sa.MetaData:
    """The metadata with every table: the core's and each installed capability's (their
    wiring modules import their tables modules)."""
    from .db import schema

    installed()
    return schema.metadata
