"""Tamper-evident audit log: who did what, from where, with what result.

Callers build an :class:`AuditEvent` and hand it to the process's :class:`AuditLog`
(``await audit.record(event)`` -- queued, no I/O -- or ``await audit.record_now(event)`` when
the record must be durable first). Records form one hash chain across every process and node;
``AuditLog.verify()`` / ``moorage audit verify`` walk it.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .config import AuditConfig
from .events import (
    PULL_ACTIONS,
    Action,
    AuditEvent,
    AuditRecord,
    VerifyResult,
)

if TYPE_CHECKING:
    from .export import iter_export, parse_csv, parse_jsonl, verify_export
    from .log import AuditLog
    from .store import AuditFilter, AuditPage, query_events

# The rest on first use (PEP 562): the configuration imports moorage.audit.config, and with it
# this package, in every `moorage` command; export/log/store bring SQLAlchemy's async engine.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".export": ("iter_export", "parse_csv", "parse_jsonl", "verify_export"),
        ".log": ("AuditLog",),
        ".store": ("AuditFilter", "AuditPage", "query_events"),
    },
)


__all__ = [
    "PULL_ACTIONS",
    "Action",
    "AuditConfig",
    "AuditEvent",
    "AuditFilter",
    "AuditLog",
    "AuditPage",
    "AuditRecord",
    "VerifyResult",
    "iter_export",
    "parse_csv",
    "parse_jsonl",
    "query_events",
    "verify_export",
]
