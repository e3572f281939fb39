"""Tag immutability: rules per namespace (an organization or a user's namespace) or repository,
each a glob pattern over tag names (``v*``, ``release-*``, ``1.?``). A tag that matches cannot
be moved to another manifest, nor deleted (alone, or with its manifest), once it exists; its
first push is allowed, and pushing the same manifest again is not a change.

Checked in the policy chain (moorage/services/rules.py, order IMMUTABILITY) inside the
transaction of the change, so /v2, the API, the UI and the registry's own jobs obey it. A
system administrator (a user with the admin flag) goes through, and the override is audited;
the registry's own work (replication, restore) is refused like anyone else.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit import AuditEvent
from ..db.confcache import ConfigCache
from ..db.schema import manifests, tags
from ..oci.names import namespace_of, valid_name
from ..services.errors import Invalid
from ..services.rules import (
    IMMUTABILITY,
    ManifestWrite,
    PolicyDenied,
    ReferenceDelete,
    Requester,
    Rule,
)
from .tables import immutable_tag_rules as t

PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]{1,128}$")


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    scope: str  # namespace | repository
    target: str
    pattern: str
    created_by: str | None
    created_at: datetime


def parse_target(raw: str) -> tuple[str, str]:
    """ORG-or-REPO → (scope, target): a name with a slash is a repository."""
    target = raw.strip()
    if "/" in target:
        if not valid_name(target):
            raise Invalid("target", f"not a repository name: {target[:80]!r}")
        return "repository", target
    if not valid_name(target):
        raise Invalid("target", f"not an organization or user name: {target[:80]!r}")
    return "namespace", target


def check_pattern(pattern: str) -> str:
    if not PATTERN.match(pattern):
        raise Invalid(
            "pattern",
            "a tag pattern is 1-128 characters: letters, digits, '_', '.', '-' and the glob "
            "characters '*', '?', '[...]'",
        )
    return pattern


def matches(pattern: str, tag: str) -> bool:
    return fnmatch.fnmatchcase(tag, pattern)


async def add(conn: AsyncConnection, scope: str, target: str, pattern: str, by: str) -> bool:
    """False when the rule was already there."""
    exists = await conn.scalar(
        sa.select(t.c.id).where(t.c.scope == scope, t.c.target == target, t.c.pattern == pattern)
    )
    if exists is not None:
        return False
    await conn.execute(
        sa.insert(t).values(
            scope=scope, target=target, pattern=pattern, created_by=by, created_at=datetime.now(UTC)
        )
    )
    return True


async def remove(conn: AsyncConnection, scope: str, target: str, pattern: str) -> bool:
    res = await conn.execute(
        sa.delete(t).where(t.c.scope == scope, t.c.target == target, t.c.pattern == pattern)
    )
    return bool(res.rowcount)


async def list_rules(conn: AsyncConnection, target: str | None = None) -> list[ImmutableRule]:
    q = sa.select(t).order_by(t.c.scope, t.c.target, t.c.pattern)
    if target is not None:
        q = q.where(t.c.target == target)
    return [
        ImmutableRule(r.scope, r.target, r.pattern, r.created_by, r.created_at)
        for r in await conn.execute(q)
    ]


async def patterns_for(conn: AsyncConnection, repository: str) -> list[str]:
    """The patterns that apply to a repository (its own and its namespace's)."""
    rows = await conn.execute(
        sa.select(t.c.pattern).where(
            sa.or_(
                sa.and_(t.c.scope == "repository", t.c.target == repository),
                sa.and_(t.c.scope == "namespace", t.c.target == namespace_of(repository)),
            )
        )
    )
    return list(rows.scalars())


async def _patterns(conn: AsyncConnection, repository: str) -> tuple[str, ...]:
    return tuple(await patterns_for(conn, repository))


# The rule's reads, cached while the rules table is unchanged (moorage/db/confcache.py: exact
# on every node: a rule added on one node holds on the next push to any node).
_rules_cache = ConfigCache("immutable_tag_rules", _patterns)


class ImmutabilityRule(Rule):
    name = "immutability"
    order = IMMUTABILITY

    def __init__(self, audit: Any) -> None:
        self.audit = audit

    async def _allow_override(
        self, who: Requester, repository: str, tag: str, digest: str, change: str
    ) -> bool:
        if who.kind != "user" or not who.is_admin:
            return False
        await self.audit.record(
            AuditEvent(
                "tag.immutable_override",
                actor=who.name,
                actor_type="user",
                repository=repository,
                tag=tag,
                digest=digest,
                details={"change": change},
            )
        )
        return True

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        if not write.tags:
            return
        patterns = await _rules_cache.get(conn, write.repository)
        if not patterns:
            return
        for tag in write.tags:
            rule = next((p for p in patterns if matches(p, tag)), None)
            if rule is None:
                continue
            current = await conn.scalar(
                sa.select(manifests.c.digest)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                .where(tags.c.repository_id == write.repository_id, tags.c.name == tag)
            )
            if current is None or current == write.digest:
                continue
            if await self._allow_override(
                write.requester, write.repository, tag, write.digest, f"moved from {current}"
            ):
                continue
            raise PolicyDenied(
                f"tag {tag} of {write.repository} is immutable (rule {rule!r}): it points to "
                f"{current} and cannot be overwritten; push under a new tag",
                {"tag": tag, "pattern": rule, "digest": current},
                policy="immutability",
            )

    async def reference_delete(self, conn: AsyncConnection, delete: ReferenceDelete) -> None:
        patterns = await _rules_cache.get(conn, delete.repository)
        if not patterns:
            return
        if delete.tag is not None:
            names = [delete.tag]
        else:  # a manifest by digest takes the tags pointing at it along
            names = list(
                (
                    await conn.execute(
                        sa.select(tags.c.name)
                        .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                        .where(
                            manifests.c.repository_id == delete.repository_id,
                            manifests.c.digest == delete.digest,
                        )
                    )
                ).scalars()
            )
        for tag in names:
            rule = next((p for p in patterns if matches(p, tag)), None)
            if rule is None:
                continue
            if await self._allow_override(
                delete.requester, delete.repository, tag, delete.digest, "deleted"
            ):
                continue
            raise PolicyDenied(
                f"tag {tag} of {delete.repository} is immutable (rule {rule!r}) and cannot be "
                "deleted",
                {"tag": tag, "pattern": rule},
                policy="immutability",
            )
