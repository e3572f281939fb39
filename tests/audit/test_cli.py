"""``moorage audit export`` / ``moorage audit verify`` against a data directory (and --config)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditConfig, AuditLog, parse_csv, parse_jsonl, verify_export
from moorage.audit import store as audit_store
from moorage.cli import main
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture, event, execute  # noqa: F401

pytestmark = ASYNC


def _location(db_url: str, tmp_path: Path) -> list[str]:
    """CLI flags reaching the test database: --data-dir (SQLite default) or a --config file."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        return ["--data-dir", str(Path(url.database).parent)]
    config = tmp_path / "moorage.yaml"
    config.write_text(f"database:\n  url: {db_url}\n")
    return ["--config", str(config), "--data-dir", str(tmp_path / "unused")]


async def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))  # main() runs its own event loop
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_export_jsonl_and_csv(
    engine: AsyncEngine, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await audit_store.append(engine, [event(i) for i in range(30)])
    where = _location(db_url, tmp_path)
    records = await all_records(engine)

    target = tmp_path / "audit.jsonl"
    code, out, err = await run_cli(
        "audit", "export", *where, "--format", "jsonl", "--output", str(target), capsys=capsys
    )
    assert (code, err) == (0, "")
    assert list(parse_jsonl(target.read_text().splitlines())) == records
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]

    code, out, err = await run_cli("audit", "export", *where, "--format", "csv", capsys=capsys)
    assert code == 0
    parsed = list(parse_csv(io.StringIO(out, newline="")))
    assert parsed == records
    assert verify_export(parsed).ok
    assert len(list(csv.reader(io.StringIO(out)))) == 31  # header + rows

    code, out, err = await run_cli(
        "audit",
        "export",
        *where,
        "--actor",
        "user1",
        "--action",
        "manifest.*",
        "--since",
        "2000-01-01T00:00:00Z",
        capsys=capsys,
    )
    assert code == 0
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert ids == [r.id for r in records if r.actor == "user1"]


async def test_cli_verify(
    engine: AsyncEngine, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = _location(db_url, tmp_path)
    await audit_store.append(engine, [event(i) for i in range(12)])
    code, out, _ = await run_cli("audit", "verify", *where, capsys=capsys)
    assert (code, out) == (0, "audit log intact: 12 records\n")

    await execute(engine, "UPDATE audit_events SET repository = 'evil/repo' WHERE id = 7")
    code, out, _ = await run_cli("audit", "verify", *where, capsys=capsys)
    assert code == 1
    assert out.startswith("audit log NOT intact: record 7: altered")

    await execute(engine, "DELETE FROM audit_events WHERE id = 5")
    code, out, _ = await run_cli("audit", "verify", *where, capsys=capsys)
    assert code == 1
    assert out.startswith("audit log NOT intact: record 5: removed")


async def test_cli_runs_beside_a_writing_server(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    """verify and export in separate processes while this process keeps appending."""
    where = _location(db_url, tmp_path)
    audit = AuditLog(engine, AuditConfig(flush_interval_ms=5, batch_size=10))
    await audit.start()
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set():
            await audit.record(event(n))
            n += 1
            if n % 10 == 0:
                await asyncio.sleep(0.005)
        return n

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.3)
        runs = []
        for argv in (["verify"], ["export", "--format", "jsonl"], ["verify"]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from moorage.cli import main; raise SystemExit(main())",
                "audit",
                *argv,
                *where,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            )
            out, err = await proc.communicate()
            runs.append((proc.returncode, out.decode(), err.decode()))
    finally:
        stop.set()
        written = await task
        await audit.stop()
    for code, stdout, stderr in runs:
        assert code == 0, (stdout, stderr)
    assert runs[0][1].startswith("audit log intact: ")
    exported = list(parse_jsonl(runs[1][1].splitlines()))
    assert exported and verify_export(exported).ok  # one consistent snapshot
    assert exported[0].id == 1
    assert len(await all_records(engine)) == written >= len(exported)
    assert (await audit.verify()).ok


async def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await run_cli(
        "audit", "verify", "--data-dir", str(tmp_path / "nothing"), capsys=capsys
    )
    assert code == 2 and "no database" in err
    assert not (tmp_path / "nothing").exists()  # nothing created

    bad = tmp_path / "bad.yaml"
    bad.write_text("database: [\n")
    code, _, err = await run_cli("audit", "verify", "--config", str(bad), capsys=capsys)
    assert code == 2 and "configuration error" in err

    # a database that was never upgraded
    data = tmp_path / "data"
    data.mkdir()
    (data / "moorage.db").write_bytes(b"")
    code, _, err = await run_cli("audit", "export", "--data-dir", str(data), capsys=capsys)
    assert code == 2 and "moorage db upgrade" in err

    with pytest.raises(SystemExit):
        main(["audit", "export", "--format", "xml"])
    with pytest.raises(SystemExit):
        main(["audit", "export", "--since", "yesterday"])
