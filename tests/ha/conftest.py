"""Fixtures of the fault tests: one cluster (3 nodes + HAProxy) for the module's session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import STORAGES, Cluster
from .postgres import PrivatePostgres, postgres_bin

_current: Cluster | None = None


@pytest.fixture(scope="session")
def ha_tmp() -> Iterator[Path]:
    """Logs and shared storage of the session; MOORAGE_TEST_KEEP_TMP=1 keeps them."""
    base = Path(tempfile.mkdtemp(prefix="moorage-ha-"))
    try:
        yield base
    finally:
        if os.environ.get("MOORAGE_TEST_KEEP_TMP", "") not in ("", "0"):
            print(f"\nHA test temp dir kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def ha_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of tests/ha's own, which test_database_restart stops and starts
    (restarting the shared one would fail the tests other workers run on it meanwhile)."""
    if postgres_bin() is None:
        pytest.skip("needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture(scope="session", params=STORAGES)
def cluster(
    ha_tmp: Path, ha_postgres: PrivatePostgres, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Three ``--no-auth`` nodes over S3 (moto), then over a shared directory, their database on
    ``ha_postgres``; tests that stop a node start it again. MOORAGE_TEST_HA_STORAGE=s3 (or
    filesystem) runs one variant."""
    global _current
    with Cluster(
        ha_tmp / f"cluster-{request.param}",
        storage=request.param,
        pg_admin_url=ha_postgres.admin_url,
    ) as c:
        _current = c
        try:
            yield c
        finally:
            _current = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    outcome = yield
    if _current is not None and outcome.excinfo is not None:
        item.add_report_section("call", "cluster logs", _current.logs())
