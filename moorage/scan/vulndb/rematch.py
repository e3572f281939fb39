"""Re-matching stored scans when the vulnerability data changes (job ``vulndb.rematch``).

Inventories are immutable and stored with each finished scan; only matching depends on the
advisories. So after an import that changed records (``moorage vulndb import``, the scheduled
refresh, a refresh on demand), every finished image scan whose ``database_updated_at`` is older
than the data is matched again from its stored inventory: no layer is read, the status stays
``done`` throughout (a policy that blocks unscanned images never sees a gap), and findings,
summary and ``database_updated_at`` change in one update. One job on the shared queue (any
node), paging by scan id with its checkpoint and progress (``moorage jobs``, the API); an index
shows its children's results, so it needs nothing of its own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...db import job_queries
from ...jobs.runner import checkpoint, report_progress
from ..inventory import inventory_from_json
from ..service import finding_json, summarize
from ..tables import scan_results
from .matcher import Matcher
from .store import updated_at

REMATCH_JOB = "vulndb.rematch"
PAGE = 100


async def queue_rematch(conn: AsyncConnection) -> int | None:
    """Queue a re-match (one at a time: a second request while one is queued is the same)."""
    return await job_queries.enqueue(conn, REMATCH_JOB, {}, dedupe_key="rematch")


def _stale(stamp: datetime) -> Any:
    r = scan_results.c
    return sa.and_(
        r.status == "done",
        r.inventory.is_not(None),
        sa.or_(r.database_updated_at.is_(None), r.database_updated_at < stamp),
    )


async def rematch(
    engine: AsyncEngine, write_engine: AsyncEngine, matcher: Matcher
) -> dict[str, Any]:
    async with engine.connect() as conn:
        stamp = await updated_at(conn)
        if stamp is None:
            return {"rematched": 0}
        total = await conn.scalar(
            sa.select(sa.func.count()).select_from(scan_results).where(_stale(stamp))
        )
    start = checkpoint()
    after = int(start) if isinstance(start, int) else 0
    done = changed = 0
    r = scan_results.c
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(r.id, r.digest, r.inventory, r.findings)
                    .where(_stale(stamp), r.id > after)
                    .order_by(r.id)
                    .limit(PAGE)
                )
            ).all()
        if not rows:
            break
        for row in rows:
            after = row.id
            try:
                doc = json.loads(row.inventory)
            except ValueError:
                continue
            if not isinstance(doc, dict) or "children" in doc:
                # an index: its report combines its children's; stamp it so it is not re-read
                found: list[dict[str, Any]] = json.loads(row.findings or "[]")
            else:
                found = [finding_json(f) for f in await matcher.match(inventory_from_json(doc))]
                changed += found != json.loads(row.findings or "[]")
            async with write_engine.begin() as conn:
                await conn.execute(
                    sa.update(scan_results)
                    .where(r.id == row.id, r.status == "done")
                    .values(
                        findings=json.dumps(found),
                        summary=json.dumps(summarize(found)),
                        database_updated_at=stamp,
                    )
                )
            done += 1
        await report_progress(
            done, total, f"{done} of {total} scans matched again", checkpoint=after
        )
    return {"rematched": done, "changed": changed, "database_updated_at": stamp.isoformat()}
