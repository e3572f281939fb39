"""Peers for the replication tests: Distribution 2.8.2 and Moorage (open, and with access
control), each started once per session on loopback; tests use repositories of their own."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, MoorageServer

from .peers import Distribution, distribution


@pytest.fixture(scope="session")
def dist_a() -> Iterator[Distribution]:
    with distribution() as peer:
        yield peer


@pytest.fixture(scope="session")
def dist_b() -> Iterator[Distribution]:
    with distribution() as peer:
        yield peer


@pytest.fixture(scope="session")
def moorage_open() -> Iterator[MoorageServer]:
    """Moorage without access control (SQLite, filesystem)."""
    with tempfile.TemporaryDirectory(prefix="moorage-repl-open-") as tmp:
        srv = MoorageServer(Path(tmp) / "data", extra_args=["--no-auth"]).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="session")
def moorage_auth() -> Iterator[MoorageServer]:
    """Moorage with access control on; user ``admin`` with ADMIN_PASSWORD."""
    with tempfile.TemporaryDirectory(prefix="moorage-repl-auth-") as tmp:
        srv = MoorageServer(
            Path(tmp) / "data", env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD}
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]
