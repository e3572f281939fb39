"""Fixtures of the audit tests: a registry with access control on whose refusal aggregation
window is one second (so a test sees the aggregated records without waiting a minute) and a
low login throttle (so a 429 is a few requests away)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer, postgres_database


@pytest.fixture(scope="module")
def refusal_server(backend: tuple[str, str | None]) -> Iterator[MoorageServer]:
    with tempfile.TemporaryDirectory(prefix="moorage-refusals-") as tmp:
        ctx = postgres_database() if backend[1] else contextlib.nullcontext(None)
        with ctx as url:
            srv = MoorageServer(
                Path(tmp) / "data",
                database_url=url,
                env={
                    "MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "MOORAGE_AUDIT_REFUSAL_AGGREGATE_SECONDS": "1",
                    "MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": "3",
                },
            ).start()
            try:
                yield srv
            finally:
                srv.stop()
