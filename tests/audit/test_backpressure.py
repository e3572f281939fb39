"""The audit queue under a burst (issue 9): bounded, pulls aggregated once it is full, every
other event written; nothing lost — the pull counts add up to the pulls made."""

from __future__ import annotations

import tracemalloc

from sqlalchemy.ext.asyncio import AsyncEngine

from moorage.audit import AuditConfig, AuditEvent, AuditLog
from moorage.audit import store as audit_store
from tests.audit import ASYNC, all_records, db_url_fixture, engine_fixture  # noqa: F401

pytestmark = ASYNC

QUEUE = 2_000
PULLS = 60_000
OTHERS = 600


def pull(i: int) -> AuditEvent:
    return AuditEvent(
        "manifest.pull",
        actor=f"user{i % 4}",
        actor_type="user",
        repository=f"team/app{i % 3}",
        tag="latest",
        digest="sha256:" + f"{i % 5:064x}",
        client_addr="10.0.0.1",
        user_agent="containerd/1.7",
        details={"status": 200},
    )


def other(i: int) -> AuditEvent:
    action = ["manifest.push", "manifest.delete", "login", "login.failed", "blob.pull"][i % 5]
    result = "denied" if action == "blob.pull" else "success"  # a refused pull: never merged
    return AuditEvent(
        action,
        actor=f"user{i % 4}",
        actor_type="user",
        result=result,  # type: ignore[arg-type]
        repository="team/app0",
        details={"n": i},
    )


async def test_a_burst_stays_bounded_and_nothing_but_pulls_is_aggregated(
    engine: AsyncEngine,
) -> None:
    audit = AuditLog(engine, AuditConfig(queue_size=QUEUE, flush_interval_ms=50))
    await audit.start()
    tracemalloc.start()
    try:
        peak = 0
        # The whole burst arrives before the writer gets a turn (no await in between): the
        # worst case for the queue.
        for i in range(PULLS):
            audit.record_nowait(pull(i))
            if i % 100 == 0:
                audit.record_nowait(other(i // 100))
            peak = max(peak, len(audit._buffer))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded: pulls stop queueing at QUEUE; the other events queue past it.
    assert peak <= QUEUE + OTHERS, peak
    assert len(audit._aggregates) <= 4 * 3 * 5  # actor x repository x digest
    assert audit.overflowed > 0 and audit.dropped == 0
    # 60,000 queued events would take well over 50 MiB; the bounded queue a few.
    assert peak_bytes < 16 * 2**20, peak_bytes
    await audit.stop()  # writes what is queued and the open aggregates
    records = await all_records(engine)
    pulls = [r for r in records if r.action == "manifest.pull"]
    others = [r for r in records if r.action != "manifest.pull" or r.result != "success"]
    # Every non-pull event landed, one record each, none aggregated.
    assert sorted(r.details["n"] for r in others) == list(range(OTHERS))
    assert not any("aggregated" in r.details for r in others)
    # Every pull is accounted for: single records plus aggregated counts.
    assert sum(r.details.get("count", 1) for r in pulls) == PULLS
    assert len(pulls) < QUEUE + 100
    assert (await audit_store.verify(engine)).ok
