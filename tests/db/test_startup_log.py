"""The start-up log (issue 9): the migrations' own lines stay, Alembic's plugin announcements
("setup plugin alembic.autogenerate...", eight INFO lines on every start) are gone."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.conftest import MoorageServer


def test_start_up_log_keeps_migrations_and_drops_plugin_noise() -> None:
    with tempfile.TemporaryDirectory(prefix="moorage-startlog-") as tmp:
        srv = MoorageServer(Path(tmp) / "data", extra_args=["--no-auth"]).start()
        try:
            srv.restart()  # a second start: nothing to migrate, still no plugin lines
        finally:
            srv.stop()
        log = srv.log()
    assert "alembic.runtime.migration" in log and "Running upgrade" in log
    assert "alembic.runtime.plugins" not in log and "setup plugin" not in log
    assert log.count("serving on") == 2
