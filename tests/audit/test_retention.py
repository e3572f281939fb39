"""Retention pruning by age and by count keeps the chain verifiable (through the anchor)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditConfig, AuditLog
from moorage.audit import store as audit_store
from moorage.audit.events import GENESIS_HASH
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture, event, execute  # noqa: F401

pytestmark = ASYNC

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def _anchor(engine: AsyncEngine) -> audit_store.Anchor:
    async with engine.connect() as conn:
        anchor = await audit_store.read_anchor(conn)
    assert anchor is not None
    return anchor


async def test_prune_by_count(engine: AsyncEngine) -> None:
    await audit_store.append(engine, [event(i) for i in range(50)])
    before = await all_records(engine)
    deleted = await audit_store.prune(engine, max_events=10, now=NOW)
    assert deleted == 40
    records = await all_records(engine)
    # the 10 newest, plus the record of the pruning itself
    assert [r.id for r in records] == list(range(41, 52))
    assert records[-1].action == "audit.prune"
    assert records[-1].details["deleted"] == 40 and records[-1].details["through_id"] == 40
    anchor = await _anchor(engine)
    assert (anchor.pruned_through_id, anchor.pruned_hash, anchor.pruned_count) == (
        40,
        before[39].hash,
        40,
    )
    result = await audit_store.verify(engine)
    assert result.ok and result.records == 11 and result.first_id == 41, result

    # appends continue the chain; pruning again moves the anchor again
    await audit_store.append(engine, [event(i) for i in range(5)])
    assert (await audit_store.verify(engine)).ok
    assert await audit_store.prune(engine, max_events=10, now=NOW) == 6
    assert (await audit_store.verify(engine)).ok
    assert (await _anchor(engine)).pruned_count == 46
    assert await audit_store.prune(engine, max_events=100, now=NOW) == 0  # nothing to do


async def test_prune_by_age_deletes_only_an_old_prefix(engine: AsyncEngine) -> None:
    def at(days_ago: float) -> datetime:
        return NOW - timedelta(days=days_ago)

    ages = [100, 90, 80, 40, 10, 95, 5, 1]  # record 6 is old but follows young ones
    await audit_store.append(engine, [event(i, time=at(d)) for i, d in enumerate(ages)])
    assert await audit_store.prune(engine, max_age_days=30, now=NOW) == 4
    records = await all_records(engine)
    assert [r.id for r in records] == [5, 6, 7, 8, 9]
    assert (await audit_store.verify(engine)).ok
    assert await audit_store.prune(engine, max_age_days=30, now=NOW + timedelta(days=21)) == 2
    assert [r.id for r in await all_records(engine)][:2] == [7, 8]
    assert (await audit_store.verify(engine)).ok


async def test_prune_everything_then_keep_going(engine: AsyncEngine) -> None:
    old = NOW - timedelta(days=400)
    await audit_store.append(engine, [event(i, time=old) for i in range(30)])
    assert await audit_store.prune(engine, max_age_days=365, now=NOW) == 30
    records = await all_records(engine)
    assert [(r.id, r.action) for r in records] == [(31, "audit.prune")]
    assert (await audit_store.verify(engine)).ok
    await audit_store.append(engine, [event(1)])
    assert (await audit_store.verify(engine)).ok


async def test_prune_in_slices(engine: AsyncEngine, monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(audit_store, "_PRUNE_SLICE", 7)
    await audit_store.append(engine, [event(i) for i in range(40)])
    assert await audit_store.prune(engine, max_events=5, now=NOW) == 35
    records = await all_records(engine)
    assert [r.action for r in records].count("audit.prune") == 1  # one record for the whole run
    assert (await audit_store.verify(engine)).ok


async def test_tampering_after_pruning_is_still_caught(engine: AsyncEngine) -> None:
    await audit_store.append(engine, [event(i) for i in range(20)])
    await audit_store.prune(engine, max_events=5, now=NOW)
    await execute(engine, "DELETE FROM audit_events WHERE id = 16")  # the first kept record
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 16), result

    # a record put back below the anchor is an insertion
    await execute(engine, "UPDATE audit_events SET id = 3 WHERE id = 17")
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 3), result


async def test_no_limits_prune_nothing(engine: AsyncEngine) -> None:
    await audit_store.append(engine, [event(i, time=NOW - timedelta(days=9999)) for i in range(5)])
    assert await audit_store.prune(engine, now=NOW) == 0
    anchor = await _anchor(engine)
    assert (anchor.pruned_through_id, anchor.pruned_hash) == (0, GENESIS_HASH)


async def test_audit_log_prune_uses_its_configuration(engine: AsyncEngine) -> None:
    config = AuditConfig.model_validate({"retention": {"max_age_days": 7, "max_events": 100}})
    audit = AuditLog(engine, config)
    for i in range(10):
        await audit.record(event(i, time=NOW - timedelta(days=10 - i)))  # 10..1 days old
    await audit.flush()
    assert await audit.prune(now=NOW) == 3
    assert (await audit.verify()).ok
