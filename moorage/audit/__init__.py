"""Tamper-evident audit log: who did what, from where, with what result.

Callers build an :class:`AuditEvent` and hand it to the process's :class:`AuditLog`
(``await audit.record(event)`` -- queued, no I/O -- or ``await audit.record_now(event)`` when
the record must be durable first). Records form one hash chain across every process and node;
``AuditLog.verify()`` / ``moorage audit verify`` walk it.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
_LAZY = {
    "iter_export": "export",
    "parse_csv": "export",
    "parse_jsonl": "export",
    "verify_export": "export",
    "AuditLog": "log",
    "AuditFilter": "store",
    "AuditPage": "store",
    "query_events": "store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
