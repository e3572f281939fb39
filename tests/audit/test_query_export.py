"""The query API (filters, keyset pagination) and JSON Lines / CSV export round trips."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import (
    AuditEvent,
    AuditFilter,
    iter_export,
    parse_csv,
    parse_jsonl,
    query_events,
    verify_export,
)
from moorage.audit import store as audit_store
from moorage.audit.export import CSV_FIELDS, export_to
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture, event  # noqa: F401

pytestmark = ASYNC

T0 = datetime(2026, 5, 1, 8, 0, 0, tzinfo=UTC)


async def _seed(engine: AsyncEngine) -> None:
    """24 events, one a minute from T0: actors alice/bob/robot, several actions and results."""
    events = []
    actions = [
        "manifest.push",
        "manifest.pull",
        "blob.push",
        "team.create",
        "team.member.add",
        "login",
    ]
    for i in range(24):
        events.append(
            AuditEvent(
                action=actions[i % len(actions)],
                actor=["alice", "bob", "acme+ci"][i % 3],
                actor_type="robot" if i % 3 == 2 else "user",
                result="denied" if i % 5 == 0 else "success",
                repository=["acme/api", "acme/web", None][i % 3],
                tag=f"t{i}",
                details={"i": i},
                time=T0 + timedelta(minutes=i),
            )
        )
    await audit_store.append(engine, events)


def _ids(page: audit_store.AuditPage) -> list[int]:
    return [r.id for r in page.events]


async def test_query_filters(engine: AsyncEngine) -> None:
    await _seed(engine)

    async def ids(**filters: object) -> list[int]:
        page = await query_events(engine, order="asc", limit=1000, **filters)  # type: ignore[arg-type]
        assert page.next_cursor is None
        return _ids(page)

    assert await ids() == list(range(1, 25))
    assert await ids(actor="bob") == [i + 1 for i in range(24) if i % 3 == 1]
    assert await ids(action="login") == [i + 1 for i in range(24) if i % 6 == 5]
    # prefixes: "manifest." and "team.*" -- and "team" alone is exact (matches nothing)
    assert await ids(action="manifest.") == [i + 1 for i in range(24) if i % 6 in (0, 1)]
    assert await ids(action="team.*") == [i + 1 for i in range(24) if i % 6 in (3, 4)]
    assert await ids(action="team") == []
    assert await ids(action="manifest.push") == [i + 1 for i in range(24) if i % 6 == 0]
    assert await ids(repository="acme/web") == [i + 1 for i in range(24) if i % 3 == 1]
    assert await ids(result="denied") == [i + 1 for i in range(24) if i % 5 == 0]
    # time range: since inclusive, until exclusive
    assert await ids(since=T0 + timedelta(minutes=20)) == [21, 22, 23, 24]
    assert await ids(until=T0 + timedelta(minutes=2)) == [1, 2]
    assert await ids(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)) == [4, 5, 6]
    # a non-UTC bound means the same instant
    cet = T0.astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    assert await ids(since=cet + timedelta(minutes=22)) == [23, 24]
    # combined
    assert await ids(actor="alice", action="manifest.", result="denied") == [1]
    assert await ids(actor="alice", repository="acme/api", since=T0 + timedelta(minutes=10)) == [
        13,
        16,
        19,
        22,
    ]


async def test_query_like_wildcards_are_literal(engine: AsyncEngine) -> None:
    await audit_store.append(
        engine, [AuditEvent("x_y.a"), AuditEvent("xzy.b"), AuditEvent("x%.c"), AuditEvent("x%y.d")]
    )
    assert [r.action for r in (await query_events(engine, action="x_y.")).events] == ["x_y.a"]
    assert [r.action for r in (await query_events(engine, action="x%.")).events] == ["x%.c"]


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_query_keyset_pagination(engine: AsyncEngine, order: str) -> None:
    await _seed(engine)
    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        page = await query_events(engine, cursor=cursor, limit=5, order=order)  # type: ignore[arg-type]
        pages += 1
        seen += _ids(page)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.events[-1].id
        cursor = page.next_cursor
    expected = list(range(1, 25))
    assert seen == (expected if order == "asc" else expected[::-1])
    assert pages == 5

    # filtered pages; an exact multiple of the page size ends with next_cursor None
    first = await query_events(engine, actor="alice", limit=4, order="asc")
    assert _ids(first) == [1, 4, 7, 10] and first.next_cursor == 10
    second = await query_events(engine, actor="alice", limit=4, order="asc", cursor=10)
    assert _ids(second) == [13, 16, 19, 22] and second.next_cursor is None

    # pages are stable while new records arrive
    page1 = await query_events(engine, limit=10)
    await audit_store.append(engine, [event(99)])
    page2 = await query_events(engine, limit=10, cursor=page1.next_cursor)
    assert _ids(page2) == list(range(14, 4, -1))


async def test_query_limit_is_bounded(engine: AsyncEngine) -> None:
    await audit_store.append(engine, [event(i) for i in range(3)])
    assert len((await query_events(engine, limit=0)).events) == 1
    assert len((await query_events(engine, limit=10**9)).events) == 3


async def _tricky(engine: AsyncEngine) -> None:
    await audit_store.append(
        engine,
        [
            AuditEvent(
                "login.failed",
                actor='eve, "the" attacker',
                user_agent='curl/8 "quoted", comma\nnew line\r\nand ünïcode ✓ \U0001f600',
                client_addr="2001:db8::1",
                details={"nested": {"list": [1, 2.5, None, True]}, "text": 'a,b\n"c"'},
            ),
            AuditEvent("system.start", actor="moorage", actor_type="system", request_id=None),
            AuditEvent(
                "manifest.push",
                actor="bob",
                actor_type="user",
                repository="acme/api",
                tag="=cmd|' /C calc'!A0",
                digest="sha256:" + "0" * 64,
                details={},
            ),
        ]
        + [event(i) for i in range(1200)],  # more than one read page and one 64 KiB chunk
    )


async def test_export_jsonl_round_trip(engine: AsyncEngine) -> None:
    await _tricky(engine)
    out = io.StringIO()
    await export_to(engine, out, "jsonl")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1203
    assert all(json.loads(line)["hash"] for line in lines)
    parsed = list(parse_jsonl(io.StringIO(out.getvalue())))
    assert parsed == await all_records(engine)
    result = verify_export(parsed)
    assert result.ok and result.records == 1203, result


async def test_export_csv_round_trip(engine: AsyncEngine) -> None:
    await _tricky(engine)
    chunks = [chunk async for chunk in iter_export(engine, "csv")]
    assert len(chunks) > 1  # streamed in pieces
    text = "".join(chunks)
    assert text.startswith(",".join(CSV_FIELDS) + "\r\n")
    parsed = list(parse_csv(io.StringIO(text, newline="")))
    assert parsed == await all_records(engine)
    assert parsed[0].user_agent is not None and "\r\n" in parsed[0].user_agent
    assert parsed[1].repository is None and parsed[1].request_id is None
    assert verify_export(parsed).ok


async def test_export_detects_an_edited_export_line(engine: AsyncEngine) -> None:
    await audit_store.append(engine, [event(i) for i in range(5)])
    out = io.StringIO()
    await export_to(engine, out, "jsonl")
    lines = out.getvalue().splitlines()
    doc = json.loads(lines[2])
    doc["actor"] = "someone-else"
    lines[2] = json.dumps(doc)
    result = verify_export(parse_jsonl(lines))
    assert (result.ok, result.bad_id) == (False, 3)
    result = verify_export(parse_jsonl(lines[:1] + lines[2:]))  # a line removed
    assert (result.ok, result.bad_id) == (False, 2)


async def test_export_with_filters(engine: AsyncEngine) -> None:
    await _seed(engine)
    out = io.StringIO()
    await export_to(engine, out, "jsonl", AuditFilter(actor="bob", action="manifest."))
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["id"] for d in got] == [2, 8, 14, 20]
    assert all(d["actor"] == "bob" and d["action"].startswith("manifest.") for d in got)
    empty = [c async for c in iter_export(engine, "csv", AuditFilter(actor="nobody"))]
    assert "".join(empty) == ",".join(CSV_FIELDS) + "\r\n"


async def test_export_rejects_unknown_format(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        async for _ in iter_export(engine, "xml"):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    "agent", ["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx", "'=already quoted", "'", "a=b"]
)
async def test_export_csv_escapes_formulas_reversibly(engine: AsyncEngine, agent: str) -> None:
    await audit_store.append(engine, [event(0, user_agent=agent, actor=agent)])
    text = "".join([chunk async for chunk in iter_export(engine, "csv")])
    row = list(csv.reader(io.StringIO(text, newline="")))[-1]
    cell = row[CSV_FIELDS.index("user_agent")]
    assert cell == (agent if agent[0].isalnum() else "'" + agent)
    assert row[CSV_FIELDS.index("actor")] == cell
    parsed = list(parse_csv(io.StringIO(text, newline="")))
    assert parsed[-1].user_agent == agent and parsed[-1].actor == agent
    assert verify_export(parsed).ok
