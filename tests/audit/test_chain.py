"""Recording, the hash chain and its verification, concurrent appenders (tasks and nodes)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditConfig, AuditEvent, AuditLog
from moorage.audit import store as audit_store
from moorage.audit.events import GENESIS_HASH, chain_hash, seal
from moorage.db.engine import create_engine
from moorage.logs import request_id
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture, event, execute  # noqa: F401

pytestmark = ASYNC


def config(**kw: object) -> AuditConfig:
    return AuditConfig.model_validate({"flush_interval_ms": 20, **kw})


# --- what gets recorded ----------------------------------------------------------------------

ACTIONS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("login", "user", "success", {}),
    ("login.failed", "anonymous", "failure", {"reason": "bad password"}),
    ("token.issue", "robot", "success", {"scopes": ["repository:team/app:pull,push"]}),
    ("blob.push", "user", "success", {"size": 1234}),
    (
        "manifest.push",
        "user",
        "success",
        {"media_type": "application/vnd.oci.image.manifest.v1+json"},
    ),
    ("manifest.pull", "anonymous", "denied", {}),
    ("blob.pull", "robot", "success", {}),
    ("tag.delete", "user", "success", {}),
    ("manifest.delete", "user", "failure", {"error": "MANIFEST_UNKNOWN"}),
    ("blob.delete", "user", "success", {}),
    ("repository.delete", "user", "success", {}),
    ("permission.grant", "user", "success", {"role": "write", "team": "devs"}),
    ("permission.revoke", "user", "success", {"role": "write", "team": "devs"}),
    ("team.member.add", "user", "success", {"member": "carol"}),
    ("organization.create", "user", "success", {"name": "acme"}),
    ("user.create", "system", "success", {"source": "ldap"}),
    ("robot.create", "user", "success", {"robot": "acme+ci"}),
    ("config.change", "system", "success", {"key": "audit.pull_events"}),
    ("policy.change", "user", "success", {"policy": "immutability", "rules": [1, 2.5, None]}),
]


async def test_each_action_yields_exactly_the_expected_record(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config())
    base = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    sent = []
    for i, (action, actor_type, result, details) in enumerate(ACTIONS):
        ev = AuditEvent(
            action=action,
            actor="" if actor_type == "anonymous" else f"actor-{i}",
            actor_type=actor_type,  # type: ignore[arg-type]
            result=result,  # type: ignore[arg-type]
            repository="acme/api" if i % 2 else None,
            tag="1.0" if i % 3 == 0 else None,
            digest="sha256:" + "ab" * 32 if i % 4 == 0 else None,
            client_addr=f"192.0.2.{i}",
            user_agent=f"agent/{i} (ünïcode ✓)",
            request_id=f"rid-{i}",
            details=details,
            time=base + timedelta(seconds=i),
        )
        sent.append(ev)
        await audit.record(ev)
    await audit.flush()

    records = await all_records(engine)
    assert len(records) == len(ACTIONS)
    prev = GENESIS_HASH
    for i, (rec, ev) in enumerate(zip(records, sent, strict=True)):
        assert rec.id == i + 1
        assert rec.time == ev.time  # UTC, microseconds kept, on both databases
        assert (rec.actor, rec.actor_type, rec.action, rec.result) == (
            ev.actor,
            ev.actor_type,
            ev.action,
            ev.result,
        )
        assert (rec.repository, rec.tag, rec.digest) == (ev.repository, ev.tag, ev.digest)
        assert (rec.client_addr, rec.user_agent, rec.request_id) == (
            ev.client_addr,
            ev.user_agent,
            ev.request_id,
        )
        assert rec.details == json.loads(json.dumps(ev.details))
        assert rec.prev_hash == prev
        # hash = sha256 over the sorted-key JSON of every field and prev_hash
        fields = rec.to_dict()
        del fields["hash"]
        fields["details"] = json.dumps(ev.details, sort_keys=True, separators=(",", ":"))
        assert rec.hash == chain_hash(fields)
        prev = rec.hash
    assert (await audit.verify()).ok


async def test_record_only_queues_and_the_flusher_writes(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(flush_interval_ms=50))
    for i in range(5):
        await audit.record(event(i, action="manifest.pull"))
    assert audit.pending == 5
    assert await audit_store.count(engine) == 0  # nothing written on the request path
    await audit.start()
    try:
        # pending drops to 0 only after the flusher task resumes from the commit; the row count
        # can be seen a moment earlier, so wait on pending and then check what is durable.
        for _ in range(250):
            if audit.pending == 0:
                break
            await asyncio.sleep(0.02)
        assert audit.pending == 0
        assert await audit_store.count(engine) == 5
    finally:
        await audit.stop()


async def test_batch_size_wakes_the_flusher(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(flush_interval_ms=60000, batch_size=10))
    await audit.start()
    try:
        for i in range(10):
            await audit.record(event(i))
        for _ in range(100):
            if await audit_store.count(engine) == 10:
                break
            await asyncio.sleep(0.02)
        assert await audit_store.count(engine) == 10
    finally:
        await audit.stop()


async def test_record_now_is_durable_on_return(engine: AsyncEngine, db_url: str) -> None:
    audit = AuditLog(engine, config(flush_interval_ms=60000))
    await audit.start()
    try:
        await audit.record(event(1))
        await audit.record_now(event(2, action="permission.grant"))
        other = create_engine(db_url)  # another node sees it at once
        try:
            assert [r.action for r in await all_records(other)] == [
                "manifest.push",
                "permission.grant",
            ]
        finally:
            await other.dispose()
    finally:
        await audit.stop()


async def test_stop_flushes_everything(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(flush_interval_ms=60000))
    await audit.start()
    for i in range(7):
        await audit.record(event(i))
    await audit.stop()
    assert await audit_store.count(engine) == 7


async def test_request_id_defaults_to_the_current_request(engine: AsyncEngine) -> None:
    token = request_id.set("abc123")
    try:
        ev = AuditEvent("blob.push", actor="alice", actor_type="user")
    finally:
        request_id.reset(token)
    assert ev.request_id == "abc123"
    assert AuditEvent("blob.push").request_id is None  # outside a request ("-")


async def test_values_are_normalized_before_hashing(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config())
    await audit.record_now(
        AuditEvent(
            "login.failed",
            actor="x" * 1000,
            user_agent="ua\x00" + "y" * 1000,
            repository="",
            tag="",
            client_addr="2001:db8::1",
            details={"z": 1, "a": {"b": [1, 2]}, "when": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    )
    (rec,) = await all_records(engine)
    assert rec.actor == "x" * 255
    assert rec.user_agent is not None and len(rec.user_agent) == 512
    assert "\x00" not in rec.user_agent
    assert rec.repository is None and rec.tag is None
    assert rec.details_json == '{"a":{"b":[1,2]},"when":"2026-01-01 00:00:00+00:00","z":1}'
    assert (await audit.verify()).ok


async def test_invalid_events_are_refused_at_once() -> None:
    with pytest.raises(ValueError):
        AuditEvent("login", actor_type="admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AuditEvent("login", result="ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AuditEvent("")
    naive = AuditEvent("login", time=datetime(2026, 1, 1, 12, 0))
    assert naive.time.tzinfo is UTC


# --- verification ----------------------------------------------------------------------------


async def _log_of(engine: AsyncEngine, n: int = 6) -> None:
    await audit_store.append(engine, [event(i) for i in range(n)])


async def test_verify_passes_on_an_untouched_log(engine: AsyncEngine) -> None:
    empty = await audit_store.verify(engine)
    assert empty.ok and empty.records == 0
    assert empty.message() == "audit log intact: 0 records"
    await _log_of(engine)
    await audit_store.append(engine, [event(9)])
    result = await audit_store.verify(engine)
    assert result.ok, result
    assert result.message() == "audit log intact: 7 records"


async def test_verify_names_an_edited_record(engine: AsyncEngine) -> None:
    await _log_of(engine)
    await execute(engine, "UPDATE audit_events SET actor = 'mallory' WHERE id = 3")
    result = await audit_store.verify(engine)
    assert not result.ok
    assert result.bad_id == 3
    assert result.reason is not None and result.reason.startswith("altered")
    assert "record 3" in result.message()


@pytest.mark.parametrize(
    "column,value",
    [
        ("details", '{"i": 2}'),  # same meaning, other text: still an edit
        ("result", "success "),
        ("occurred_at", None),
        ("prev_hash", "f" * 64),
    ],
)
async def test_verify_notices_any_edited_column(
    engine: AsyncEngine, column: str, value: object
) -> None:
    await _log_of(engine)
    if column == "occurred_at":
        new_time = datetime(2020, 1, 1, tzinfo=UTC)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE audit_events SET occurred_at = :v WHERE id = 2"), {"v": new_time}
            )
    else:
        await execute(engine, f"UPDATE audit_events SET {column} = :v WHERE id = 2", v=value)
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 2), result


async def test_verify_names_the_successor_of_a_rehashed_edit(engine: AsyncEngine) -> None:
    """An attacker who also recomputes the edited record's hash breaks the next link."""
    await _log_of(engine)
    rec = (await all_records(engine))[2]
    forged = seal(
        AuditEvent(
            rec.action,
            actor="mallory",
            actor_type="user",
            repository=rec.repository,
            time=rec.time,
        ),
        rec.id,
        rec.prev_hash,
    )
    await execute(
        engine,
        "UPDATE audit_events SET actor = 'mallory', tag = NULL, digest = NULL, client_addr = NULL,"
        " user_agent = NULL, request_id = NULL, details = '{}', hash = :h WHERE id = 3",
        h=forged.hash,
    )
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 4), result
    assert result.reason is not None and "prev_hash" in result.reason


async def test_verify_names_a_deleted_record(engine: AsyncEngine) -> None:
    await _log_of(engine)
    await execute(engine, "DELETE FROM audit_events WHERE id = 4")
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 4), result
    assert result.reason is not None and result.reason.startswith("removed")


async def test_verify_names_records_cut_from_the_end(engine: AsyncEngine) -> None:
    await _log_of(engine)
    await execute(engine, "DELETE FROM audit_events WHERE id >= 5")
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 5), result
    assert result.reason is not None and "end" in result.reason


async def test_verify_names_the_first_record_when_it_is_deleted(engine: AsyncEngine) -> None:
    await _log_of(engine)
    await execute(engine, "DELETE FROM audit_events WHERE id = 1")
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 1), result


async def _insert(engine: AsyncEngine, rec_id: int, prev_hash: str, valid_hash: bool) -> None:
    forged = seal(
        AuditEvent("permission.grant", actor="mallory", actor_type="user"), rec_id, prev_hash
    )
    row = {
        "id": forged.id,
        "occurred_at": forged.time,
        "actor": forged.actor,
        "actor_type": forged.actor_type,
        "action": forged.action,
        "result": forged.result,
        "details": forged.details_json,
        "prev_hash": forged.prev_hash,
        "hash": forged.hash if valid_hash else "e" * 64,
    }
    from moorage.db.audit_schema import audit_events

    async with engine.begin() as conn:
        await conn.execute(sa.insert(audit_events).values(**row))


async def test_verify_names_an_inserted_record_with_a_valid_hash(engine: AsyncEngine) -> None:
    """A well-chained forgery appended behind the log's back: the recorded head exposes it."""
    await _log_of(engine)
    last = (await all_records(engine))[-1]
    await _insert(engine, last.id + 1, last.hash, valid_hash=True)
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 7), result
    assert result.reason is not None and result.reason.startswith("inserted")


async def test_verify_names_an_inserted_record_with_a_bad_hash(engine: AsyncEngine) -> None:
    await _log_of(engine)
    last = (await all_records(engine))[-1]
    await _insert(engine, last.id + 1, last.hash, valid_hash=False)
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 7), result


async def test_verify_names_an_inserted_record_in_the_middle(engine: AsyncEngine) -> None:
    """Records moved up to make room, a forgery put in the gap: the first moved one is named."""
    await _log_of(engine)
    await execute(engine, "UPDATE audit_events SET id = id + 100 WHERE id >= 4")
    await execute(engine, "UPDATE audit_events SET id = id - 99 WHERE id >= 100")
    records = await all_records(engine)
    await _insert(engine, 4, records[2].hash, valid_hash=True)
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 5), result


async def test_verify_names_an_inserted_record_before_the_first(engine: AsyncEngine) -> None:
    await _log_of(engine)
    await _insert(engine, 0, GENESIS_HASH, valid_hash=True)
    result = await audit_store.verify(engine)
    assert (result.ok, result.bad_id) == (False, 0), result
    assert result.reason is not None and result.reason.startswith("inserted")


# --- one chain, many writers -----------------------------------------------------------------


async def test_concurrent_appends_from_many_tasks(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(flush_interval_ms=5, batch_size=7))
    await audit.start()

    async def worker(w: int) -> None:
        for i in range(15):
            ev = event(w * 100 + i, actor=f"worker{w}")
            if i % 5 == 0:
                await audit.record_now(ev)
            else:
                await audit.record(ev)
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(worker(w) for w in range(20)))
    finally:
        await audit.stop()
    records = await all_records(engine)
    assert [r.id for r in records] == list(range(1, 301))
    assert sorted(r.details["i"] for r in records) == sorted(
        w * 100 + i for w in range(20) for i in range(15)
    )
    # each worker's events stay in the order it recorded them
    for w in range(20):
        mine = [r.details["i"] for r in records if r.actor == f"worker{w}"]
        assert mine == sorted(mine)
    result = await audit.verify()
    assert result.ok and result.records == 300, result


async def test_two_nodes_append_to_one_chain(db_url: str) -> None:
    """Two engines (two nodes' connection pools) append at once: one valid, gapless chain."""
    nodes = [create_engine(db_url), create_engine(db_url)]
    logs = [AuditLog(e, config(flush_interval_ms=1, batch_size=3)) for e in nodes]
    try:
        for log in logs:
            await log.start()

        async def node_worker(n: int, w: int) -> None:
            for i in range(20):
                await logs[n].record(event(i, actor=f"node{n}", details={"w": w, "i": i}))
                if i % 4 == 0:
                    await asyncio.sleep(0.002)

        async def direct(n: int) -> None:  # plus raw appends, racing through the store
            for i in range(15):
                await audit_store.append(nodes[n], [event(i, actor=f"direct{n}")] * 2)

        await asyncio.gather(
            *(node_worker(n, w) for n in range(2) for w in range(5)), direct(0), direct(1)
        )
        for log in logs:
            await log.stop()
        records = await all_records(nodes[0])
        assert [r.id for r in records] == list(range(1, 2 * 5 * 20 + 2 * 15 * 2 + 1))
        actors = [r.actor for r in records]
        assert actors.count("node0") == actors.count("node1") == 100
        assert actors.count("direct0") == actors.count("direct1") == 30
        result = await audit_store.verify(nodes[1])
        assert result.ok, result
    finally:
        for e in nodes:
            await e.dispose()


async def test_two_nodes_in_separate_processes(db_url: str, tmp_path: object) -> None:
    """Two OS processes append at the same time (what several server nodes do)."""
    code = (
        "import asyncio, sys\n"
        "from moorage.db.engine import create_engine\n"
        "from moorage.audit import AuditEvent\n"
        "from moorage.audit.store import append\n"
        "async def main():\n"
        "    e = create_engine(sys.argv[1])\n"
        "    for i in range(40):\n"
        "        await append(e, [AuditEvent('blob.push', actor=sys.argv[2], details={'i': i})] * 3)\n"
        "    await e.dispose()\n"
        "asyncio.run(main())\n"
    )
    import sys

    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", code, db_url, f"proc{n}")
        for n in range(2)
    ]
    assert [await p.wait() for p in procs] == [0, 0]
    engine = create_engine(db_url)
    try:
        records = await all_records(engine)
        assert len(records) == 240
        result = await audit_store.verify(engine)
        assert result.ok, result
    finally:
        await engine.dispose()


# --- pulls: sampling and aggregation; overflow; an unreachable database ----------------------


async def test_pull_events_kept_by_default(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config())
    for i in range(20):
        await audit.record(event(i, action="blob.pull"))
    await audit.flush()
    assert await audit_store.count(engine) == 20


async def test_pull_sampling(engine: AsyncEngine) -> None:
    none = AuditLog(engine, config(pull_events="sample", pull_sample_rate=0))
    for i in range(20):
        await none.record(event(i, action="manifest.pull"))
        await none.record(event(i, action="manifest.pull", result="denied"))  # always kept
    await none.record(event(0, action="manifest.push"))  # not a pull
    await none.flush()
    records = await all_records(engine)
    assert len(records) == 21
    assert all(r.result == "denied" for r in records if r.action == "manifest.pull")

    half = AuditLog(engine, config(pull_events="sample", pull_sample_rate=0.5))
    half._random.seed(7)
    for i in range(400):
        await half.record(event(i, action="blob.pull"))
    await half.flush()
    sampled = await audit_store.count(engine) - 21
    assert 140 < sampled < 260


async def test_pull_aggregation(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(pull_events="aggregate", pull_aggregate_seconds=0.2))
    await audit.start()
    try:
        for i in range(30):
            await audit.record(
                event(0, action="manifest.pull", client_addr=f"10.0.0.{i % 4}", request_id=None)
            )
        await audit.record(event(1, action="manifest.pull"))  # another tag: its own record
        await audit.record(event(0, action="manifest.pull", result="denied"))  # never merged
        await audit.flush()
        assert [r.result for r in await all_records(engine)] == ["denied"]
        await asyncio.sleep(0.5)  # the window closes; the flusher writes the aggregates
        await audit.flush()
    finally:
        await audit.stop()
    records = await all_records(engine)
    assert len(records) == 3
    agg = next(r for r in records if r.tag == "v0" and r.result == "success")
    assert agg.details["aggregated"] is True
    assert agg.details["count"] == 30
    assert sorted(agg.details["clients"]) == [f"10.0.0.{i}" for i in range(4)]
    assert agg.details["first"] <= agg.details["last"]
    assert (await audit_store.verify(engine)).ok


async def test_full_queue_keeps_every_non_pull_event(engine: AsyncEngine) -> None:
    """Pushes, deletes, logins, refusals are never dropped, full queue or not (issue 9)."""
    audit = AuditLog(engine, config(queue_size=5))
    for i in range(8):
        await audit.record(event(i))
    assert (audit.pending, audit.dropped) == (8, 0)
    await audit.flush()
    records = await all_records(engine)
    assert [r.details["i"] for r in records] == list(range(8))


async def test_aggregate_table_full_drops_pulls_and_records_the_overflow(
    engine: AsyncEngine,
) -> None:
    audit = AuditLog(engine, config(queue_size=2))
    for i in range(8):  # 2 queued, 2 aggregated, 4 with no room left: dropped, counted
        await audit.record(event(i, action="manifest.pull", digest=f"sha256:{i:064x}"))
    assert audit.dropped == 4
    await audit.flush(aggregates=True)
    records = await all_records(engine)
    overflow = [r for r in records if r.action == "audit.overflow"]
    assert len(overflow) == 1 and overflow[0].details == {"dropped": 4}
    assert overflow[0].actor_type == "system"


async def test_unwritable_database_keeps_events_queued(tmp_path: object) -> None:
    """record() never fails; a failing write keeps the events and the flusher retries."""
    from pathlib import Path

    from moorage.db.engine import upgrade

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = create_engine(url)  # the tables do not exist yet
    audit = AuditLog(engine, config(flush_interval_ms=10))
    try:
        await audit.start()
        for i in range(4):
            await audit.record(event(i))
        with pytest.raises(sa.exc.OperationalError):
            await audit.record_now(event(4, action="login"))
        await asyncio.sleep(0.05)
        assert audit.pending == 5
        await upgrade(url)  # the database comes back
        for _ in range(200):
            if audit.pending == 0:
                break
            await asyncio.sleep(0.02)
        assert audit.pending == 0
        await audit.stop()
        records = await all_records(engine)
        assert [r.details["i"] for r in records if r.action == "manifest.push"] == [0, 1, 2, 3]
        assert [r.action for r in records][-1] == "login"
        assert (await audit.verify()).ok
    finally:
        await engine.dispose()


async def test_disabled_log_records_nothing(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, config(enabled=False))
    await audit.record(event(1))
    await audit.record_now(event(2))
    assert await audit_store.count(engine) == 0


async def test_reads_never_wait_for_writers(engine: AsyncEngine) -> None:
    """The server builds its AuditLog on writer(engine); verify and query still only read."""
    from moorage.db.engine import writer

    audit = AuditLog(writer(engine), config())
    await audit.record_now(event(1))
    async with writer(engine).begin() as conn:  # a long write transaction elsewhere
        await conn.execute(sa.text("UPDATE audit_anchor SET updated_at = updated_at"))
        async with asyncio.timeout(5):  # SQLite's busy timeout is 10 s
            assert (await audit.verify()).ok
            assert [r.id for r in (await audit.query()).events] == [1]
