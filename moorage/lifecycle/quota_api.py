"""/api/v1 for quotas: a namespace's quota and usage (its members and system administrators),
every quota (system administrators), setting and removing one (system administrators,
audited ``quota.set`` / ``quota.remove``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from ..api.routing import Call, Op
from ..services.errors import Denied
from ..services.models import Model
from . import quota


class NamespaceQuota(Model):
    namespace: str
    kind: str = Field(description="org or user")
    limit_bytes: int | None = Field(description="The quota; null: none.")
    usage_bytes: int = Field(
        description="Distinct blobs referenced by the namespace's manifests, plus the manifests."
    )
    updated_by: str | None
    updated_at: datetime | None


class NamespaceQuotas(Model):
    items: list[NamespaceQuota]


class QuotaBody(Model):
    limit_bytes: int = Field(ge=0, le=quota.MAX_BYTES, description="The quota in bytes.")


def out(q: quota.Quota) -> NamespaceQuota:
    return NamespaceQuota(
        namespace=q.namespace,
        kind=q.kind,
        limit_bytes=q.limit_bytes,
        usage_bytes=q.usage_bytes,
        updated_by=q.updated_by,
        updated_at=q.updated_at,
    )


def _is_admin(c: Call) -> bool:
    return bool(getattr(c.principal, "is_admin", False))


def _admin(c: Call) -> None:
    if not _is_admin(c):
        raise Denied("only a system administrator may do this")


async def may_read(rt: Any, principal: Any, namespace: str, kind: str) -> bool:
    """System administrators; a user their own namespace; holders of a role on the org."""
    if getattr(principal, "is_admin", False):
        return True
    if getattr(principal, "kind", "") != "user":
        return False
    if kind == "user":
        return bool(getattr(principal, "name", None) == namespace)
    if rt.access is None:
        return False
    return bool(await rt.access.organization_actions(principal, namespace))


def ops(rt: Any) -> list[Op]:
    async def namespace_quota(c: Call) -> Any:
        name = quota.check_namespace(c.path["namespace"])
        async with rt.ctx.engine.connect() as conn:
            kind = await quota.namespace_kind(conn, name)
            # Outsiders learn no names: the same refusal whether or not it exists.
            if kind is None or not await may_read(rt, c.principal, name, kind):
                if _is_admin(c):
                    await quota.existing_namespace(conn, name)  # 404 for administrators
                raise Denied(f"you may not read the quota of {name}")
            found = await quota.get(conn, name)
        return out(found)

    async def namespace_quotas(c: Call) -> Any:
        _admin(c)
        async with rt.ctx.engine.connect() as conn:
            found = await quota.list_quotas(conn)
        return NamespaceQuotas(items=[out(q) for q in found])

    async def change(c: Call, limit: int | None) -> quota.Quota:
        _admin(c)
        actor = str(getattr(c.principal, "name", "admin"))
        return await quota.change(
            rt.ctx.write_engine, rt.audit, c.path["namespace"], limit, actor, "user"
        )

    async def set_namespace_quota(c: Call) -> Any:
        b: QuotaBody = c.body
        return out(await change(c, b.limit_bytes))

    async def remove_namespace_quota(c: Call) -> Any:
        await change(c, None)
        return None

    path = "/namespaces/{namespace}/quota"
    w = (400, 401, 403, 404, 422)
    return [
        Op("GET", "/quotas", namespace_quotas, "Every namespace quota with its usage (system administrators)", "quotas", "read", response=NamespaceQuotas, errors=(401, 403)),
        Op("GET", path, namespace_quota, "An organization's or user's storage quota and usage (its members, the user, system administrators)", "quotas", "read", response=NamespaceQuota),
        Op("PUT", path, set_namespace_quota, "Set an organization's or user's storage quota in bytes (system administrators; audited)", "quotas", "write", body=QuotaBody, response=NamespaceQuota, errors=w),
        Op("DELETE", path, remove_namespace_quota, "Remove an organization's or user's storage quota (system administrators; audited)", "quotas", "write", status=204, errors=w),
    ]  # fmt: skip
