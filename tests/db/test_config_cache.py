"""The push path's configuration cache (moorage/db/confcache.py) across nodes.

Each process caches webhook subscriptions, replication policies, scan-on-push settings and
immutability rules, and checks one counter per table on each push; a trigger bumps the counter
in the transaction of every change of the table, whoever makes it. What must hold: two nodes
on one database — a rule added or removed on one is obeyed by the next push to the other, at
once (no staleness to wait out), and so is a rule written by plain SQL that no Moorage code
ran (as the previous release's nodes, which know nothing of the counter, write their changes
during a rolling upgrade); and every cached table carries its triggers (a migration that
rebuilds a table on SQLite drops them).
"""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moorage.db.confcache import WATCHED
from tests.conftest import (
    ADMIN_PASSWORD,
    BACKENDS,
    MoorageServer,
    error_code,
    image_manifest,
    org_with_admin_developer,
    postgres_database,
    put_manifest,
)

PASSWORD = "config-cache-test-password-1"


@pytest.fixture(scope="module", params=BACKENDS)
def nodes(request: pytest.FixtureRequest) -> Iterator[tuple[MoorageServer, MoorageServer]]:
    """Two nodes (two `moorage serve` processes) on one database and one blob store."""
    secret = {"MOORAGE_AUTH_TOKEN_KEY_ENCRYPTION_SECRET": "config-cache-secret-0123456789ab"}
    env = {"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, "MOORAGE_LOG_ACCESS_LOG": "false", **secret}
    with tempfile.TemporaryDirectory(prefix="moorage-confcache-") as tmp:
        ctx = postgres_database() if request.param == "postgresql" else _no_database()
        with ctx as url:
            data = Path(tmp) / "data"
            a = MoorageServer(data, database_url=url, env=env).start(timeout=120)
            b = MoorageServer(data, database_url=url, env=env)
            try:
                b.start(timeout=120)
                yield a, b
            finally:
                b.stop()
                a.stop()


class _no_database:  # noqa: N801 - a context manager standing in for postgres_database()
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sql(node: MoorageServer, statement: str) -> list[tuple[object, ...]]:
    """Plain SQL on the nodes' database, outside any Moorage code."""
    if node.database_url:
        out = subprocess.run(
            ["psql", node.database_url, "-AtF", "|", "-c", statement],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line]
    conn = sqlite3.connect(node.data_dir / "moorage.db", timeout=30)
    try:
        with conn:
            return list(conn.execute(statement).fetchall())
    finally:
        conn.close()


def _generations(node: MoorageServer) -> dict[str, int]:
    rows = _sql(node, "SELECT name, generation FROM config_generations")
    return {str(name): int(str(gen)) for name, gen in rows}


def _developer(node: MoorageServer) -> tuple[str, str]:
    return org_with_admin_developer(node, PASSWORD, "cc", "dev")


def test_an_immutability_rule_changed_on_one_node_holds_on_the_other_at_once(
    nodes: tuple[MoorageServer, MoorageServer],
) -> None:
    a, b = nodes
    org, user = _developer(a)
    repo = f"{org}/app"
    admin = ("admin", ADMIN_PASSWORD)
    rule = {"target": org, "pattern": "v*"}
    with (
        httpx.Client(base_url=a.url, auth=admin, timeout=60) as api_a,
        httpx.Client(base_url=b.url, auth=(user, PASSWORD), timeout=60) as push_b,
    ):
        # B's cache learns "no rule for this repository" (a tag moved twice).
        for _ in range(2):
            r = put_manifest(push_b, repo, "v1", image_manifest(push_b, repo))
            assert r.status_code == 201, r.text

        # A adds the rule; B's very next push obeys it.
        assert api_a.post("/api/v1/immutable-tags", json=rule).status_code == 204
        r = put_manifest(push_b, repo, "v1", image_manifest(push_b, repo))
        assert r.status_code == 403 and error_code(r) == "DENIED", r.text
        assert "immutable" in r.text
        d = push_b.delete(f"/v2/{repo}/manifests/v1")
        assert d.status_code == 403 and error_code(d) == "DENIED"

        # A removes it; B moves the tag again at once.
        assert api_a.post("/api/v1/immutable-tags/remove", json=rule).status_code == 204
        r = put_manifest(push_b, repo, "v1", image_manifest(push_b, repo))
        assert r.status_code == 201, r.text

        # A rule written by plain SQL (no Moorage code bumps anything) is obeyed too.
        _sql(
            b,
            "INSERT INTO immutable_tag_rules (scope, target, pattern, created_by, created_at) "
            f"VALUES ('repository', '{repo}', 'v1', 'sql', CURRENT_TIMESTAMP)",
        )
        r = put_manifest(push_b, repo, "v1", image_manifest(push_b, repo))
        assert r.status_code == 403 and error_code(r) == "DENIED", r.text
        _sql(b, f"DELETE FROM immutable_tag_rules WHERE target = '{repo}'")
        r = put_manifest(push_b, repo, "v1", image_manifest(push_b, repo))
        assert r.status_code == 201, r.text


def test_every_cached_table_bumps_its_generation(
    nodes: tuple[MoorageServer, MoorageServer],
) -> None:
    a, _ = nodes
    before = _generations(a)
    assert set(WATCHED) <= set(before), before
    ns = f"gen{uuid.uuid4().hex[:6]}"
    # An INSERT, an UPDATE and a DELETE, each its own transaction: three bumps.
    _sql(
        a,
        "INSERT INTO scan_settings (namespace, on_push, updated_at) "
        f"VALUES ('{ns}', false, CURRENT_TIMESTAMP)",
    )
    _sql(a, f"UPDATE scan_settings SET on_push = true WHERE namespace = '{ns}'")
    _sql(a, f"DELETE FROM scan_settings WHERE namespace = '{ns}'")
    after = _generations(a)
    assert after["scan_settings"] == before["scan_settings"] + 3
    # Every cached table has its triggers (a table rebuilt on SQLite would have lost them).
    if a.database_url:
        rows = _sql(
            a,
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = 'config_generation'",
        )
        assert {r[0] for r in rows} == set(WATCHED)
    else:
        rows = _sql(a, "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
        found = {(str(t), str(n)) for t, n in rows}
        for table in WATCHED:
            for op in ("insert", "update", "delete"):
                assert (table, f"config_generation_{table}_{op}") in found
