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

from .harness import Cluster

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
def cluster(ha_tmp: Path) -> Iterator[Cluster]:
    """Three ``--no-auth`` nodes over shared storage; tests that stop a node start it again."""
    global _current
    with Cluster(ha_tmp / "cluster") as c:
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
