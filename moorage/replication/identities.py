"""Geo-replication of identities: users (with their password hashes and credential epoch),
organizations, teams, team members, permissions and robot accounts, so that any site can take
over (Harbor replicates none of them).

State-based, with a three-way merge. Each site's identities are a flat *snapshot* (key → JSON
value, e.g. ``user:alice``, ``team:acme/devs``, ``perm:team:acme/devs@repo:acme/app``). Of two
sites, the one with the smaller site id *initiates* (one initiator per pair, so one base):

1. it reads the peer's snapshot (``GET /api/v1/replication/identities``);
2. merges its own, the peer's and the *base* — what both last agreed on — key by key: a side
   that changed a key since the base wins; when both did, a user's later ``updated_at`` wins,
   else the initiator's; a key removed on one side and unchanged on the other is removed;
3. sends the peer its changes (``PUT``, conditional on the peer's snapshot version, so a change
   made there meanwhile is never overwritten: the next round merges it), applies its own;
4. stores the merge as the new base (less what either side could not apply).

A site that was away merges on its return like any round: nothing is lost but a conflicting
change to the same key, which the rule above settles. Sessions, personal access tokens and
signing keys stay per site (clients log in again where they land).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..audit import AuditEvent, AuditLog
from ..auth.admin import grant_role_in
from ..db.queries import _aware, now
from ..db.schema import organizations, permissions, repositories, robots, team_members, teams, users
from ..services.errors import Conflict, Invalid, ServiceError
from . import queries as q
from .service import ReplicationService
from .tables import replication_identity_bases as bases

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("moorage.replication")
IDENTITY_JOB = "replication.identities"
BATCH = 300  # changes per PUT (the API takes bodies up to 1 MiB)
MAX_SNAPSHOT = 64 * 1024 * 1024
Snapshot = dict[str, dict[str, Any]]
_ORDER = ("org:", "user:", "team:", "member:", "perm:", "robot:")


def _ts(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None  # type: ignore[union-attr]


def version(snapshot: Snapshot) -> str:
    raw = json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


# --- reading --------------------------------------------------------------------------------


async def snapshot(conn: AsyncConnection) -> Snapshot:
    out: Snapshot = {}
    for u in await conn.execute(sa.select(users)):
        out[f"user:{u.username}"] = {
            "email": u.email,
            "display_name": u.display_name,
            "password_hash": u.password_hash,
            "is_admin": bool(u.is_admin),
            "source": u.source,
            "external_id": u.external_id,
            "disabled": bool(u.disabled),
            "token_version": int(u.token_version or 0),
            "updated_at": _ts(u.updated_at),
        }
    org_names = {}
    for o in await conn.execute(sa.select(organizations)):
        org_names[o.id] = o.name
        out[f"org:{o.name}"] = {"description": o.description or ""}
    team_names = {}
    for t in await conn.execute(sa.select(teams)):
        name = f"{org_names[t.organization_id]}/{t.name}"
        team_names[t.id] = name
        out[f"team:{name}"] = {"description": t.description or "", "source": t.source}
    user_names = {r.id: r.username for r in await conn.execute(sa.select(users.c.id, users.c.username))}
    for m in await conn.execute(sa.select(team_members)):
        out[f"member:{team_names[m.team_id]}/{user_names[m.user_id]}"] = {}
    repo_ids = sa.select(permissions.c.repository_id).where(permissions.c.repository_id.is_not(None))
    repo_names = {
        r.id: r.name
        for r in await conn.execute(
            sa.select(repositories.c.id, repositories.c.name).where(repositories.c.id.in_(repo_ids))
        )
    }
    for p in await conn.execute(sa.select(permissions)):
        subject = f"user:{user_names[p.user_id]}" if p.user_id else f"team:{team_names[p.team_id]}"
        target = (
            f"org:{org_names[p.organization_id]}"
            if p.organization_id
            else f"repo:{repo_names[p.repository_id]}"
        )
        out[f"perm:{subject}@{target}"] = {"role": p.role}
    for r in await conn.execute(sa.select(robots)):
        out[f"robot:{r.name}"] = {
            "namespace": r.namespace,
            "description": r.description or "",
            "secret_hash": r.secret_hash,
            "access": r.access,
            "expires_at": _ts(r.expires_at),
            "revoked_at": _ts(r.revoked_at),
            "created_by": r.created_by,
        }
    return out


# --- merging (pure) -------------------------------------------------------------------------


def merge3(base: Snapshot, local: Snapshot, peer: Snapshot) -> Snapshot:
    """The merged snapshot (see the module): *local* is the initiator's."""
    out: Snapshot = {}
    for key in set(base) | set(local) | set(peer):
        b, mine, theirs = base.get(key), local.get(key), peer.get(key)
        if mine == theirs:
            value = mine
        elif mine == b:
            value = theirs  # only the peer changed it (or removed it)
        elif theirs == b:
            value = mine  # only we changed it
        elif mine is None or theirs is None:
            value = mine if theirs is None else theirs  # a change beats a removal
        elif key.startswith("user:") and (theirs.get("updated_at") or "") > (
            mine.get("updated_at") or ""
        ):
            value = theirs
        else:
            value = mine
        if value is not None:
            out[key] = value
    return out


def diff(current: Snapshot, target: Snapshot) -> dict[str, dict[str, Any] | None]:
    """What turns *current* into *target*: key → new value (None: remove)."""
    changes: dict[str, dict[str, Any] | None] = {}
    for key, value in target.items():
        if current.get(key) != value:
            changes[key] = value
    for key in current:
        if key not in target:
            changes[key] = None
    return changes


def _rank(key: str, removing: bool) -> int:
    i = next((n for n, p in enumerate(_ORDER) if key.startswith(p)), len(_ORDER))
    return -i if removing else i


# --- applying -------------------------------------------------------------------------------


def _parse_ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


async def _id(conn: AsyncConnection, table: sa.Table, **where: Any) -> int | None:
    cond = [table.c[k] == v for k, v in where.items()]
    found = await conn.scalar(sa.select(table.c.id).where(*cond))
    return int(found) if found is not None else None


async def _org_id(conn: AsyncConnection, name: str) -> int | None:
    return await _id(conn, organizations, name=name)


async def _team_id(conn: AsyncConnection, name: str) -> int | None:
    org, _, team = name.partition("/")
    org_id = await _org_id(conn, org)
    return None if org_id is None else await _id(conn, teams, organization_id=org_id, name=team)


async def _apply_one(conn: AsyncConnection, key: str, value: dict[str, Any] | None) -> None:
    kind, _, name = key.partition(":")
    ts = now()
    if kind == "org":
        org_id = await _org_id(conn, name)
        if value is None:
            if org_id is not None:
                await conn.execute(sa.delete(organizations).where(organizations.c.id == org_id))
        elif org_id is None:
            await conn.execute(
                sa.insert(organizations).values(
                    name=name, description=value.get("description", ""), created_at=ts
                )
            )
        else:
            await conn.execute(
                sa.update(organizations)
                .where(organizations.c.id == org_id)
                .values(description=value.get("description", ""))
            )
    elif kind == "user":
        user_id = await _id(conn, users, username=name)
        if value is None:
            if user_id is not None:
                await conn.execute(sa.delete(users).where(users.c.id == user_id))
            return
        fields = {
            "email": value.get("email"),
            "display_name": value.get("display_name"),
            "password_hash": value.get("password_hash"),
            "is_admin": bool(value.get("is_admin")),
            "source": value.get("source") or "local",
            "external_id": value.get("external_id"),
            "disabled": bool(value.get("disabled")),
            "token_version": int(value.get("token_version") or 0),
            "updated_at": _parse_ts(value.get("updated_at")) or ts,
        }
        if user_id is None:
            await conn.execute(sa.insert(users).values(username=name, created_at=ts, **fields))
        else:
            await conn.execute(sa.update(users).where(users.c.id == user_id).values(**fields))
    elif kind == "team":
        org, _, team = name.partition("/")
        team_id = await _team_id(conn, name)
        if value is None:
            if team_id is not None:
                await conn.execute(sa.delete(teams).where(teams.c.id == team_id))
            return
        fields = {"description": value.get("description", ""), "source": value.get("source") or "local"}
        if team_id is None:
            org_id = await _org_id(conn, org)
            if org_id is None:
                raise Invalid("team", f"organization {org} is missing")
            await conn.execute(
                sa.insert(teams).values(organization_id=org_id, name=team, created_at=ts, **fields)
            )
        else:
            await conn.execute(sa.update(teams).where(teams.c.id == team_id).values(**fields))
    elif kind == "member":
        team_name, _, username = name.rpartition("/")
        team_id = await _team_id(conn, team_name)
        user_id = await _id(conn, users, username=username)
        if team_id is None or user_id is None:
            if value is None:
                return
            raise Invalid("member", f"team {team_name} or user {username} is missing")
        cond = (team_members.c.team_id == team_id, team_members.c.user_id == user_id)
        await conn.execute(sa.delete(team_members).where(*cond))
        if value is not None:
            await conn.execute(
                sa.insert(team_members).values(team_id=team_id, user_id=user_id, created_at=ts)
            )
    elif kind == "perm":
        subject, _, target = name.partition("@")
        s_kind, _, s_name = subject.partition(":")
        _t_kind, _, t_name = target.partition(":")
        role = value.get("role") if value is not None else None
        await grant_role_in(
            conn,
            role,
            user=s_name if s_kind == "user" else None,
            team=s_name if s_kind == "team" else None,
            target=t_name,
        )
    elif kind == "robot":
        robot_id = await _id(conn, robots, name=name)
        if value is None:
            if robot_id is not None:
                await conn.execute(sa.delete(robots).where(robots.c.id == robot_id))
            return
        fields = {
            "namespace": value.get("namespace") or name.partition("+")[0],
            "description": value.get("description", ""),
            "secret_hash": value.get("secret_hash") or "",
            "access": value.get("access") or [],
            "expires_at": _parse_ts(value.get("expires_at")),
            "revoked_at": _parse_ts(value.get("revoked_at")),
            "created_by": value.get("created_by"),
        }
        if robot_id is None:
            await conn.execute(sa.insert(robots).values(name=name, created_at=ts, **fields))
        else:
            await conn.execute(sa.update(robots).where(robots.c.id == robot_id).values(**fields))
    else:
        raise Invalid("key", f"unknown identity key {key[:80]!r}")


async def apply_changes(
    conn: AsyncConnection, changes: dict[str, dict[str, Any] | None]
) -> list[str]:
    """Apply *changes* (removals first, innermost first; then additions, outermost first);
    returns the keys that could not be applied (left for the next round)."""
    failed: list[str] = []
    removals = sorted((k for k, v in changes.items() if v is None), key=lambda k: _rank(k, True))
    upserts = sorted((k for k, v in changes.items() if v is not None), key=lambda k: _rank(k, False))
    for key in removals + upserts:
        try:
            async with conn.begin_nested():
                await _apply_one(conn, key, changes[key])
        except (ServiceError, ValueError, sa.exc.IntegrityError) as exc:
            log.warning("identity %s not applied: %s", key[:120], exc)
            failed.append(key)
    return failed


def check_changes(doc: Any) -> dict[str, dict[str, Any] | None]:
    """A peer's change list, bounded and shaped (hostile input)."""
    if not isinstance(doc, dict) or len(doc) > BATCH:
        raise Invalid("changes", f"changes is an object of at most {BATCH} keys")
    out: dict[str, dict[str, Any] | None] = {}
    for key, value in doc.items():
        if not isinstance(key, str) or len(key) > 700 or not key.startswith(_ORDER):
            raise Invalid("changes", "an identity key is kind:name")
        if value is not None and not isinstance(value, dict):
            raise Invalid("changes", f"{key[:80]}: a value is an object or null")
        out[key] = value
    return out


# --- the sync -------------------------------------------------------------------------------


class IdentitySync:
    """Both sides of the identity merge: the job that initiates it, and what a peer's calls
    (admin.py's API operations) do here."""

    def __init__(self, service: ReplicationService, audit: AuditLog) -> None:
        self.service = service
        self.ctx = service.ctx
        self.audit = audit

    async def local(self) -> tuple[str, Snapshot]:
        async with self.ctx.engine.connect() as conn:
            snap = await snapshot(conn)
        return version(snap), snap

    async def receive(
        self, expect: str, changes: dict[str, dict[str, Any] | None], peer: str
    ) -> dict[str, Any]:
        """A peer's changes, applied only if this site's snapshot is still *expect*."""
        async with self.service._tx() as conn:
            current = await snapshot(conn)
            if version(current) != expect:
                raise Conflict("identities changed here since they were read: merge again")
            failed = await apply_changes(conn, changes)
            after = version(await snapshot(conn))
        await self._audit(len(changes) - len(failed), len(failed), peer)
        return {"version": after, "failed": failed}

    async def _audit(self, applied: int, failed: int, peer: str) -> None:
        if applied or failed:
            await self.audit.record(
                AuditEvent(
                    "replication.identities",
                    actor=f"site:{peer}"[:255],
                    actor_type="system",
                    details={"applied": applied, "failed": failed},
                )
            )

    async def job(self, _payload: dict[str, Any]) -> dict[str, Any]:
        own = await self.service.site_id()
        async with self.ctx.engine.connect() as conn:
            sites = [r for r in await q.remotes(conn) if r.site]
        out: dict[str, Any] = {}
        for remote in sites:
            try:
                out[remote.name] = await self.sync(remote, own)
            except Exception as exc:  # noqa: BLE001 - one peer away must not stop the others
                log.info("identity sync with %s: %s", remote.name, exc)
                out[remote.name] = f"failed: {exc}"
        return out

    async def sync(self, remote: q.RemoteRow, own: str) -> str:
        async with _api(self.service, remote) as http:
            peer_id = remote.peer_site_id or await _site(http)
            if remote.peer_site_id is None:
                async with self.service._tx() as conn:
                    await q.record_check(conn, remote.id, True, "site id learnt", peer_id)
            if peer_id == own:
                return "the remote is this site"
            if own > peer_id:
                return "the peer initiates"
            r = await http.get("/api/v1/replication/identities")
            _ok(r)
            doc = r.json()
            theirs: Snapshot = doc["entries"]
            their_version = str(doc["version"])
            async with self.ctx.engine.connect() as conn:
                mine = await snapshot(conn)
                row = (
                    await conn.execute(sa.select(bases.c.snapshot).where(bases.c.peer_site_id == peer_id))
                ).first()
            base: Snapshot = dict(row.snapshot) if row is not None else {}
            merged = merge3(base, mine, theirs)
            to_peer = diff(theirs, merged)
            to_me = diff(mine, merged)
            failed: set[str] = set()
            items = list(to_peer.items())
            for i in range(0, len(items), BATCH):
                batch = dict(items[i : i + BATCH])
                r = await http.put(
                    "/api/v1/replication/identities",
                    json={"expect": their_version, "site": own, "changes": batch},
                )
                _ok(r)
                answer = r.json()
                their_version = str(answer["version"])
                failed |= set(answer.get("failed") or [])
        async with self.service._tx() as conn:
            if version(await snapshot(conn)) != version(mine):
                return "identities changed here meanwhile: merged next round"
            failed |= set(await apply_changes(conn, to_me))
            agreed = {k: v for k, v in merged.items() if k not in failed}
            for k in failed:  # keep the old agreement for what did not apply
                if k in base:
                    agreed[k] = base[k]
                else:
                    agreed.pop(k, None)
            await _save_base(conn, peer_id, agreed)
        await self._audit(len(to_me), 0, peer_id)
        return f"{len(to_peer)} sent, {len(to_me)} received, {len(failed)} not applied"


async def _save_base(conn: AsyncConnection, peer: str, snap: Snapshot) -> None:
    await conn.execute(sa.delete(bases).where(bases.c.peer_site_id == peer))
    await conn.execute(
        sa.insert(bases).values(peer_site_id=peer, version=version(snap), snapshot=snap, updated_at=now())
    )


class _api:
    """An HTTP client for a site's /api/v1 with the remote's credentials (Basic)."""

    def __init__(self, service: ReplicationService, remote: q.RemoteRow) -> None:
        import httpx

        creds = service.credentials(remote)
        from .models import TLSOptions

        self.http = httpx.AsyncClient(
            base_url=remote.url,
            auth=(creds.username, creds.password) if creds else None,
            verify=TLSOptions(verify=not remote.insecure, ca_pem=remote.ca_pem or None).context(),
            timeout=60,
            trust_env=False,
            follow_redirects=False,
        )

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()


def _ok(r: httpx.Response) -> None:
    if len(r.content) > MAX_SNAPSHOT:
        raise ValueError("the peer's answer is too large")
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:300]
        raise ValueError(f"{r.request.method} {r.request.url.path}: {r.status_code} {message}")


async def _site(http: httpx.AsyncClient) -> str:
    r = await http.get("/api/v1/replication/site")
    _ok(r)
    site = r.json().get("site_id")
    if not isinstance(site, str) or not site or len(site) > 64:
        raise ValueError("the peer did not say its site id")
    return site


async def peer_site(service: ReplicationService, remote: q.RemoteRow) -> str:
    """The site id of a Moorage site remote (``GET /api/v1/replication/site``)."""
    async with _api(service, remote) as http:
        return await _site(http)

