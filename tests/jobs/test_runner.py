"""The job queue across real processes and in one: exactly one node runs each job, a dead
node's job is run again by another, schedules run once per period, failures are retried."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.db import job_queries
from moorage.db.engine import create_engine, upgrade, writer
from moorage.db.queries import now
from moorage.db.schema import jobs
from moorage.jobs.config import JobsConfig
from moorage.jobs.runner import JobRunner
from tests.conftest import postgres_database, stop_process

ROOT = Path(__file__).resolve().parents[2]
FAST = JobsConfig(
    poll_seconds=0.05, heartbeat_seconds=0.2, stale_seconds=1.5, retry_base_seconds=0.05
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with postgres_database() as url:
            yield url


@contextlib.asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(url)
    engine = create_engine(url, 4)
    try:
        yield writer(engine)
    finally:
        await engine.dispose()


async def _wait(engine: AsyncEngine, done: Any, within: float = 60) -> list[job_queries.JobRow]:
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as conn:
            rows = await job_queries.list_jobs(conn, limit=10_000)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, Counter(r.state for r in rows)
        await asyncio.sleep(0.1)


def _start_worker(url: str, out: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.worker", url, str(out), name, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


async def test_three_nodes_run_each_job_exactly_once(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs.txt"
    async with _engine(db_url) as engine:
        # No node dies here: a node starved of CPU for 1.5 s on a busy machine (parallel test
        # workers) would lose its jobs to another as if dead, a legitimate second run.
        nodes = [_start_worker(db_url, out, f"node{i}", "--stale=60") for i in range(3)]
        try:
            for n in range(150):
                async with engine.begin() as conn:
                    await job_queries.enqueue(conn, "test.record", {"n": n})
            rows = await _wait(engine, lambda rs: all(r.state == "succeeded" for r in rs))
        finally:
            for p in nodes:
                stop_process(p)
    runs = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(n) for _, n, _ in runs) == list(range(150))  # each once, none lost
    assert {r.attempts for r in rows} == {1}
    assert sorted(r.result for r in rows) == list(range(150))
    by_node = Counter(node for _, _, node in runs)
    assert len(by_node) >= 2, by_node  # the work was shared, not serialized on one node


async def test_a_dead_nodes_job_is_run_again_by_another(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs.txt"
    async with _engine(db_url) as engine:
        doomed = _start_worker(db_url, out, "doomed", "--hang")
        try:
            async with engine.begin() as conn:
                job_id = await job_queries.enqueue(conn, "test.slow", {"n": 7})
            deadline = time.monotonic() + 30
            while "test.slow-start 7 doomed" not in (out.read_text() if out.exists() else ""):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            stop_process(doomed, sig=9)
        survivor = _start_worker(db_url, out, "survivor")
        try:
            rows = await _wait(engine, lambda rs: rs and rs[0].state == "succeeded")
        finally:
            stop_process(survivor)
    job = rows[0]
    assert (job.id, job.attempts, job.claimed_by, job.result) == (job_id, 2, "survivor", "survivor")
    assert "test.slow 7 survivor" in out.read_text()


async def test_a_schedule_runs_once_per_period_whatever_the_number_of_nodes(db_url: str) -> None:
    async with _engine(db_url) as engine:
        runs: list[str] = []
        runners = []
        for i in range(3):
            r = JobRunner(engine, FAST, worker=f"n{i}")

            async def tick(_p: dict[str, Any], name: str = f"n{i}") -> None:
                runs.append(name)

            r.register("test.tick", tick)
            r.schedule("test.tick", timedelta(hours=1))
            runners.append(r)
        for _ in range(4):
            await asyncio.gather(*(r.run_once() for r in runners))
        await _wait(engine, lambda rs: rs and all(r.state == "succeeded" for r in rs))
        async with engine.connect() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(jobs))
    assert count == 1
    assert len(runs) == 1


async def test_an_at_start_schedule_also_runs_when_each_process_starts(db_url: str) -> None:
    """Audit retention is such a schedule: a node restarted with a new limit applies it at once,
    even inside the period slot in which an earlier process already ran it."""
    async with _engine(db_url) as engine:
        runs: list[str] = []
        for incarnation in ("first", "restarted"):
            r = JobRunner(engine, FAST, worker=incarnation)

            async def tick(_p: dict[str, Any], name: str = incarnation) -> None:
                runs.append(name)

            r.register("test.prune", tick)
            r.schedule("test.prune", timedelta(hours=1), at_start=True)
            for _ in range(3):
                await r.run_once()
            await _wait(engine, lambda rs: rs and all(x.state == "succeeded" for x in rs))
        # the same period slot: without at_start the restarted process would not run it
        assert runs == ["first", "restarted"]


async def test_failures_are_retried_then_given_up(db_url: str) -> None:
    async with _engine(db_url) as engine:
        attempts: Counter[str] = Counter()
        runner = JobRunner(engine, FAST, worker="w")

        async def flaky(p: dict[str, Any]) -> str:
            attempts[p["name"]] += 1
            if p["name"] == "never" or attempts[p["name"]] < 3:
                raise RuntimeError(f"boom {attempts[p['name']]}")
            return "ok"

        runner.register("test.flaky", flaky)
        ok = await runner.enqueue("test.flaky", {"name": "third-time"}, max_attempts=5)
        bad = await runner.enqueue("test.flaky", {"name": "never"}, max_attempts=2)
        runner.start()
        try:
            rows = await _wait(
                engine, lambda rs: {r.state for r in rs} <= {"succeeded", "failed"}, within=30
            )
        finally:
            await runner.stop()
    by_id = {r.id: r for r in rows}
    assert (by_id[ok].state, by_id[ok].attempts, by_id[ok].result) == ("succeeded", 3, "ok")
    assert (by_id[bad].state, by_id[bad].attempts) == ("failed", 2)
    assert "RuntimeError: boom 2" in (by_id[bad].last_error or "")


async def test_dedupe_key_keeps_one_active_job(db_url: str) -> None:
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, FAST)
        first = await runner.enqueue("test.x", {}, dedupe_key="repo/a")
        assert first is not None
        assert await runner.enqueue("test.x", {}, dedupe_key="repo/a") is None
        assert await runner.enqueue("test.x", {}, dedupe_key="repo/b") is not None
        async with engine.begin() as conn:
            await conn.execute(sa.update(jobs).where(jobs.c.id == first).values(state="succeeded"))
        assert await runner.enqueue("test.x", {}, dedupe_key="repo/a") is not None


async def test_progress_is_visible_and_a_rerun_resumes_from_its_checkpoint(db_url: str) -> None:
    """A job reports progress (what the API, UI and ``moorage jobs`` show) with a checkpoint;
    when an attempt fails part-way, the next attempt starts from that checkpoint."""
    from moorage.jobs.runner import checkpoint, report_progress

    async with _engine(db_url) as engine:
        runner = JobRunner(engine, FAST, worker="n0")
        starts: list[Any] = []

        async def copy(payload: dict[str, Any]) -> int:
            start = checkpoint() or 0
            starts.append(start)
            for i in range(start, 10):
                await report_progress(i + 1, 10, f"item {i}", checkpoint=i + 1)
                if i == 4 and start == 0:
                    raise RuntimeError("the network went away")
            return 10

        runner.register("test.copy", copy)
        async with engine.begin() as conn:
            job_id = await job_queries.enqueue(conn, "test.copy", {})
        deadline = time.monotonic() + 30
        while True:
            await runner.run_once()
            await asyncio.sleep(0.1)
            async with engine.connect() as conn:
                job = await job_queries.get_job(conn, job_id)
            assert job is not None
            if job.state == "succeeded" or time.monotonic() > deadline:
                break
    # First attempt: 5 done, the write of 'item 0' and of the last item before the failure
    # need not both happen (writes are throttled), but the rerun resumed past the start.
    assert starts[0] == 0 and 0 < starts[1] <= 5, starts
    assert job.state == "succeeded" and job.attempts == 2 and job.result == 10
    assert job.progress == {"done": 10, "total": 10, "message": "item 9", "checkpoint": 10}


async def test_a_kind_with_slots_of_its_own_runs_beside_the_shared_ones(db_url: str) -> None:
    """Four jobs of a kind with 4 slots of its own run at once while the node's single shared
    slot is busy with another kind; each finished job starts the next at once (no poll wait)."""
    config = JobsConfig(poll_seconds=30, heartbeat_seconds=30, stale_seconds=60)
    config = config.model_copy(update={"concurrency": 1})
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, config, worker="slots")
        running: set[str] = set()
        most = 0
        release = asyncio.Event()

        async def track(payload: dict[str, Any]) -> None:
            nonlocal most
            running.add(payload["n"])
            most = max(most, len([n for n in running if n.startswith("own")]))
            if payload["n"] == "shared":
                await release.wait()
            else:
                await asyncio.sleep(0.2)
            running.discard(payload["n"])

        runner.register("shared.kind", track)
        runner.register("own.kind", track, concurrency=4)
        await runner.enqueue("shared.kind", {"n": "shared"})
        for i in range(12):
            await runner.enqueue("own.kind", {"n": f"own{i}"})
        runner.start()
        try:
            # With a 30 s poll, 12 jobs of 0.2 s in 4 slots finish well within the first poll
            # period only because each finished job wakes the runner.
            await _wait(
                engine,
                lambda rows: (
                    sum(r.state == "succeeded" and r.kind == "own.kind" for r in rows) == 12
                ),
                within=20,
            )
            assert most == 4
            assert "shared" in running  # the shared slot was busy all along
        finally:
            release.set()
            await runner.stop()


async def test_a_starved_node_does_not_requeue_its_own_running_job(db_url: str) -> None:
    """A node's event loop blocked past the stale window (a loaded machine) finds its own job's
    heartbeat stale: it must not queue that job again (the job would run twice, and its first
    run's result be refused); a silent node's job is still taken back."""
    config = JobsConfig(poll_seconds=0.05, heartbeat_seconds=0.2, stale_seconds=0.5)
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, config, worker="starved")
        starts: list[int] = []
        release = asyncio.Event()

        async def slow(payload: dict[str, Any]) -> None:
            starts.append(payload["n"])
            await release.wait()

        runner.register("slow.kind", slow)
        own = await runner.enqueue("slow.kind", {"n": 1})
        runner.start()
        try:
            await _wait(engine, lambda rows: rows[0].state == "running", within=20)
            # The loop is starved: no heartbeat for well past stale_seconds.
            time.sleep(1.2)  # noqa: ASYNC251 - blocking on purpose
            # A dead node's job, heart-beaten long ago, beside it.
            async with engine.begin() as conn:
                dead = await job_queries.enqueue(conn, "other.kind", {})
                assert dead is not None
                await conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == dead)
                    .values(
                        state="running",
                        claimed_by="dead-node",
                        heartbeat_at=now() - timedelta(hours=1),
                    )  # fmt: skip
                )
            for _ in range(20):  # several polls, each one looking for stale jobs
                await asyncio.sleep(0.1)
            async with engine.connect() as conn:
                mine = await job_queries.get_job(conn, own)
                theirs = await job_queries.get_job(conn, dead)
            assert mine is not None and theirs is not None
            assert (mine.state, mine.claimed_by, mine.attempts) == ("running", "starved", 1)
            assert theirs.state == "queued"
            assert starts == [1]
        finally:
            release.set()
            await runner.stop()


async def test_a_progress_write_cut_by_a_cancel_leaves_the_job_and_the_engine_sound(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's progress reporter cancelled in the middle of its write (replication cancelled
    its reporter when a tag was done): the cancel must take effect (Python 3.11's wait_for in
    the writers' queue swallowed it: the reporter wrote on forever, the job never ended) and
    the write must finish or not happen, never leave an invalid transaction behind whose
    PendingRollbackError fails the job."""
    from moorage.jobs import runner as runner_module

    monkeypatch.setattr(runner_module, "PROGRESS_INTERVAL", 0.0)
    config = JobsConfig(poll_seconds=0.05, heartbeat_seconds=0.2, stale_seconds=30)
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, config, worker="cutter")
        errors: list[BaseException] = []

        async def job(_payload: dict[str, Any]) -> int:
            for i in range(60):

                async def report(n: int = i) -> None:
                    while True:
                        await runner_module.report_progress(n, 60, f"step {n}")

                task = asyncio.ensure_future(report())
                await asyncio.sleep(0.001 * (i % 7))  # lands anywhere in a write
                task.cancel()
                await asyncio.wait({task}, timeout=10)
                if not task.done():  # the cancel was swallowed: it writes on forever
                    errors.append(RuntimeError(f"reporter {i} still running after its cancel"))
                    task.cancel()
                elif not task.cancelled() and task.exception() is not None:
                    errors.append(task.exception())  # type: ignore[arg-type]
            return 60

        runner.register("cut.kind", job)
        job_id = await runner.enqueue("cut.kind", {})
        runner.start()
        try:
            rows = await _wait(engine, lambda rows: rows[0].state in ("succeeded", "failed"), 120)
        finally:
            await runner.stop()
        assert errors == []
        assert (rows[0].id, rows[0].state, rows[0].result) == (job_id, "succeeded", 60)
        async with engine.begin() as conn:  # the pool is sound afterwards
            assert await job_queries.get_job(conn, job_id) is not None


def _count_writes(engine: AsyncEngine) -> list[int]:
    """Write transactions begun on *engine* (the writer) from now on: a one-item counter."""
    counter = [0]

    def on_begin(_conn: Any) -> None:
        counter[0] += 1

    sa.event.listen(engine.sync_engine, "begin", on_begin)
    return counter


async def test_a_poll_claims_for_every_pool_in_one_transaction(db_url: str) -> None:
    """A wake comes with every finished job; each poll claimed in one write transaction per
    pool (the shared slots and each kind with slots of its own), mostly finding nothing. One
    statement in one transaction now takes what is due in every pool, each within its own free
    slots, and the jobs come back running, owned and heart-beaten."""
    config = JobsConfig(poll_seconds=30, heartbeat_seconds=30, stale_seconds=60, concurrency=2)
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, config, worker="pools")
        release = asyncio.Event()

        async def hold(_payload: dict[str, Any]) -> None:
            await release.wait()

        runner.register("shared.kind", hold)
        runner.register("own.a", hold, concurrency=1)
        runner.register("own.b", hold, concurrency=3)
        for kind, n in (("shared.kind", 3), ("own.a", 2), ("own.b", 1)):
            for i in range(n):
                await runner.enqueue(kind, {"i": i})
        await runner.run_once()  # the first poll also looks for stale jobs: not counted
        release.set()
        await asyncio.gather(*runner._running.values())
        release = asyncio.Event()  # the next jobs hold on
        writes = _count_writes(engine)
        updates: list[str] = []

        def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "UPDATE JOBS" in statement.upper():  # PostgreSQL: WITH … UPDATE
                updates.append(statement)

        sa.event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
        assert await runner.run_once() == 2  # what the first poll's slots left behind
        sa.event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
        assert writes[0] == 1
        assert len(updates) == 1  # one statement claims for all three pools
        async with engine.connect() as conn:
            rows = await job_queries.list_jobs(conn)
        running = [r for r in rows if r.state == "running"]
        assert sorted(r.kind for r in running) == ["own.a", "shared.kind"]
        assert all(r.claimed_by == "pools" and r.heartbeat_at and r.attempts == 1 for r in running)
        release.set()
        await runner.stop()


async def test_a_handlers_final_rows_commit_with_the_jobs_success(db_url: str) -> None:
    """``on_success`` writes go in the transaction that marks the job succeeded (claim + finish:
    two write transactions for the whole job); a write that fails rolls the success back and the
    job is retried; a job taken over by another node writes nothing of its own."""
    from moorage.jobs.runner import on_success

    config = JobsConfig(poll_seconds=30, heartbeat_seconds=30, stale_seconds=60, max_attempts=2)
    config = config.model_copy(update={"retry_base_seconds": 0.01, "retry_max_seconds": 0.01})
    async with _engine(db_url) as engine:
        runner = JobRunner(engine, config, worker="finisher")
        seen: list[str] = []
        steal = False

        async def job(payload: dict[str, Any]) -> str:
            async def write(conn: Any) -> None:
                if payload["n"] == "bad" and not seen.count("bad-retry"):
                    seen.append("bad-retry")
                    raise RuntimeError("the job's own write failed")
                await conn.execute(
                    sa.update(jobs).where(jobs.c.kind == "marks").values(dedupe_key=payload["n"])
                )
                seen.append(payload["n"])

            assert on_success(write)
            if steal:  # another node took the job over meanwhile
                async with engine.begin() as conn:
                    await conn.execute(sa.update(jobs).values(claimed_by="thief"))
            return str(payload["n"])

        runner.register("final.kind", job)
        assert not on_success(lambda conn: asyncio.sleep(0))  # outside a job: write yourself
        async with engine.begin() as conn:  # a row the writes mark
            await job_queries.enqueue(conn, "marks", {}, run_after=now() + timedelta(days=1))
        good = await runner.enqueue("final.kind", {"n": "good"})
        await runner.run_once()
        writes = _count_writes(engine)
        await asyncio.gather(*runner._running.values())
        assert writes[0] == 1  # finish and the handler's write together
        assert seen == ["good"]

        bad = await runner.enqueue("final.kind", {"n": "bad"})
        assert bad is not None
        await runner.run_once()
        await asyncio.gather(*runner._running.values())
        async with engine.connect() as conn:
            row = await job_queries.get_job(conn, bad)
            assert row is not None and row.state == "queued" and row.result is None
            assert "own write failed" in (row.last_error or "")
            marked = await conn.scalar(sa.select(jobs.c.dedupe_key).where(jobs.c.kind == "marks"))
        assert marked == "good"  # the failed write's transaction was rolled back whole
        await asyncio.sleep(0.05)
        await runner.run_once()
        await asyncio.gather(*runner._running.values())
        assert seen == ["good", "bad-retry", "bad"]

        steal = True
        stolen = await runner.enqueue("final.kind", {"n": "stolen"})
        assert stolen is not None
        await runner.run_once()
        await asyncio.gather(*runner._running.values())
        async with engine.connect() as conn:
            row = await job_queries.get_job(conn, stolen)
            marked = await conn.scalar(sa.select(jobs.c.dedupe_key).where(jobs.c.kind == "marks"))
        assert row is not None and row.state == "running" and row.claimed_by == "thief"
        assert marked == "bad" and "stolen" not in seen
        await runner.stop()
        assert good is not None


async def test_a_cached_claim_statement_binds_its_worker_and_time_afresh(db_url: str) -> None:
    """The claim statement is built once per set of pools: each execution still claims for its
    own worker and compares run_after with its own time."""
    async with _engine(db_url) as engine:
        async with engine.begin() as conn:
            first = await job_queries.enqueue(conn, "k", {})
            later = await job_queries.enqueue(
                conn, "k", {}, run_after=now() + timedelta(seconds=1.5)
            )
        async with engine.begin() as conn:
            got = await job_queries.claim_pools(conn, "node-a", [(["k"], 5)])
        assert [(j.id, j.claimed_by) for j in got] == [(first, "node-a")]
        await asyncio.sleep(1.6)
        async with engine.begin() as conn:
            got = await job_queries.claim_pools(conn, "node-b", [(["k"], 5)])
        assert [(j.id, j.claimed_by, j.state) for j in got] == [(later, "node-b", "running")]
