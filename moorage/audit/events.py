"""Audit events, stored records and the hash chain's canonical form (pure: no I/O)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, get_args

from ..logs import request_id as _request_id_var

ActorType = Literal["user", "robot", "anonymous", "system"]
Result = Literal["success", "partial", "failure", "denied"]
ACTOR_TYPES: frozenset[str] = frozenset(get_args(ActorType))
RESULTS: frozenset[str] = frozenset(get_args(Result))

# What `moorage audit export` writes (export.py); here so that the command line can offer them
# without importing the exporter and the store.
ExportFormat = Literal["jsonl", "csv"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv")

# prev_hash of the first record ever written (and of the chain anchor before any pruning).
GENESIS_HASH = "0" * 64

# Column widths (moorage/db/audit_schema.py). Values are cut to them *before* hashing, so that
# what is hashed is exactly what is stored.
_LIMITS = {
    "actor": 255,
    "client_addr": 64,
    "user_agent": 512,
    "action": 64,
    "repository": 255,
    "tag": 128,
    "digest": 200,
    "request_id": 64,
}


class Action:
    """Action names callers should use (others are accepted: ``team.*``, ``robot.*``, ...)."""

    LOGIN = "login"
    LOGIN_FAILED = "login.failed"
    LOGIN_THROTTLED = "login.throttled"
    TOKEN_ISSUE = "token.issue"
    BLOB_PUSH = "blob.push"
    BLOB_PULL = "blob.pull"
    BLOB_DELETE = "blob.delete"
    BLOB_MOUNT = "blob.mount"
    MANIFEST_PUSH = "manifest.push"
    MANIFEST_PULL = "manifest.pull"
    MANIFEST_DELETE = "manifest.delete"
    TAG_DELETE = "tag.delete"
    REPOSITORY_DELETE = "repository.delete"
    PERMISSION_GRANT = "permission.grant"
    PERMISSION_REVOKE = "permission.revoke"
    TEAM_CREATE = "team.create"
    TEAM_DELETE = "team.delete"
    TEAM_MEMBER_ADD = "team.member.add"
    TEAM_MEMBER_REMOVE = "team.member.remove"
    ORGANIZATION_CREATE = "organization.create"
    ORGANIZATION_DELETE = "organization.delete"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_DELETE = "user.delete"
    ROBOT_CREATE = "robot.create"
    ROBOT_REVOKE = "robot.revoke"
    ROBOT_DELETE = "robot.delete"
    CONFIG_CHANGE = "config.change"
    POLICY_CHANGE = "policy.change"
    # Written by the audit subsystem itself.
    AUDIT_PRUNE = "audit.prune"
    AUDIT_OVERFLOW = "audit.overflow"


# Pulls are the bulk of a registry's traffic; configuration may sample or aggregate them.
PULL_ACTIONS: frozenset[str] = frozenset({Action.MANIFEST_PULL, Action.BLOB_PULL})


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values (SQLite gives them back) are taken to be UTC."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2026-01-02T03:04:05.000006Z`` (canonical form)."""
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """ISO 8601 / RFC 3339 (``Z`` allowed); naive values are taken to be UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return as_utc(datetime.fromisoformat(value))


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, ASCII only: one text per value, on every database."""
    return _CANONICAL.encode(value)


_q = encode_basestring_ascii  # a str as canonical JSON (ASCII, escaped, quoted)


def _qn(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


class SharedDetails(Mapping[str, Any]):
    """Read-only details that many records share (a pull's ``{"status": 200}``), with their
    canonical JSON encoded once instead of once per record."""

    __slots__ = ("_data", "json")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.json = canonical_json(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"SharedDetails({self._data!r})"


def _clean(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded to UTF-8.
    if len(value) <= limit and value.isascii() and "\x00" not in value:
        return value
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value[:limit]


def _optional(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    value = _clean(str(value), limit)
    return value or None  # "" and None are one value (CSV cannot tell them apart)


def _current_request_id() -> str | None:
    rid = _request_id_var.get()
    return None if rid in ("", "-") else rid


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One action, as a caller reports it.

    ``request_id`` defaults to the id of the request being served (moorage.logs.request_id);
    ``time`` to now (UTC). Strings longer than their column are cut, and empty optional strings
    stored as None, when the event is sealed into a record (``normalized``).
    """

    action: str
    actor: str = ""
    actor_type: ActorType = "anonymous"
    result: Result = "success"
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    client_addr: str | None = None
    user_agent: str | None = None
    request_id: str | None = field(default_factory=_current_request_id)
    details: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        # Cheap checks only: this runs on request paths. Strings are normalized by seal().
        if not self.action:
            raise ValueError("audit event needs an action")
        if self.actor_type not in ACTOR_TYPES:
            raise ValueError(f"actor_type must be one of {sorted(ACTOR_TYPES)}")
        if self.result not in RESULTS:
            raise ValueError(f"result must be one of {sorted(RESULTS)}")
        details = self.details
        if type(details) is not SharedDetails and not isinstance(details, Mapping):
            raise TypeError("details must be a mapping")
        if self.time.tzinfo is not UTC:
            object.__setattr__(self, "time", as_utc(self.time))

    def normalized(self) -> AuditEvent:
        """The event as it will be stored: strings cut to their column widths (NUL and lone
        surrogates replaced), empty optional strings as None."""
        return replace(
            self,
            action=_clean(str(self.action), _LIMITS["action"]),
            actor=_clean(str(self.actor or ""), _LIMITS["actor"]),
            repository=_optional(self.repository, _LIMITS["repository"]),
            tag=_optional(self.tag, _LIMITS["tag"]),
            digest=_optional(self.digest, _LIMITS["digest"]),
            client_addr=_optional(self.client_addr, _LIMITS["client_addr"]),
            user_agent=_optional(self.user_agent, _LIMITS["user_agent"]),
            request_id=_optional(self.request_id, _LIMITS["request_id"]),
        )

    @property
    def details_json(self) -> str:
        return canonical_json(dict(self.details))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored event: its chain position (id), the previous record's hash and its own."""

    id: int
    time: datetime
    actor: str
    actor_type: str
    client_addr: str | None
    user_agent: str | None
    action: str
    repository: str | None
    tag: str | None
    digest: str | None
    result: str
    request_id: str | None
    details_json: str
    prev_hash: str
    hash: str

    @property
    def details(self) -> Any:
        return json.loads(self.details_json)

    def hash_input(self) -> dict[str, Any]:
        return hash_input(
            self.id,
            self.time,
            self.actor,
            self.actor_type,
            self.client_addr,
            self.user_agent,
            self.action,
            self.repository,
            self.tag,
            self.digest,
            self.result,
            self.request_id,
            self.details_json,
            self.prev_hash,
        )

    def computed_hash(self) -> str:
        return chain_hash(self.hash_input())

    def to_dict(self) -> dict[str, Any]:
        """The export / forwarding form (``details`` as an object, ``time`` as RFC 3339)."""
        return {
            "id": self.id,
            "time": format_time(self.time),
            "actor": self.actor,
            "actor_type": self.actor_type,
            "client_addr": self.client_addr,
            "user_agent": self.user_agent,
            "action": self.action,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "result": self.result,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        details = data.get("details")
        details_json = details if isinstance(details, str) else canonical_json(details or {})
        return cls(
            id=int(data["id"]),
            time=parse_time(str(data["time"])),
            actor=str(data.get("actor") or ""),
            actor_type=str(data["actor_type"]),
            client_addr=data.get("client_addr") or None,
            user_agent=data.get("user_agent") or None,
            action=str(data["action"]),
            repository=data.get("repository") or None,
            tag=data.get("tag") or None,
            digest=data.get("digest") or None,
            result=str(data["result"]),
            request_id=data.get("request_id") or None,
            details_json=details_json,
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


def hash_input(
    id: int,
    time: datetime,
    actor: str,
    actor_type: str,
    client_addr: str | None,
    user_agent: str | None,
    action: str,
    repository: str | None,
    tag: str | None,
    digest: str | None,
    result: str,
    request_id: str | None,
    details_json: str,
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "id": id,
        "time": format_time(time),
        "actor": actor,
        "actor_type": actor_type,
        "client_addr": client_addr,
        "user_agent": user_agent,
        "action": action,
        "repository": repository,
        "tag": tag,
        "digest": digest,
        "result": result,
        "request_id": request_id,
        "details": details_json,
        "prev_hash": prev_hash,
    }


def chain_hash(fields: Mapping[str, Any]) -> str:
    """sha256 (hex) over the sorted-key JSON of every field and the previous record's hash."""
    return hashlib.sha256(canonical_json(fields).encode("ascii")).hexdigest()


def seal(event: AuditEvent, record_id: int, prev_hash: str) -> AuditRecord:
    """The record *event* becomes at chain position *record_id* after *prev_hash*.

    The audit writer's per-record cost (issue 9: it must keep up with the fastest request rate):
    the fields are normalized in place of ``normalized()``'s dataclass copy, and the hash input
    is one dict encoded once by the C JSON encoder — the same canonical text as ``hash_input``.
    """
    action = _clean(str(event.action), _LIMITS["action"])
    actor = _clean(str(event.actor or ""), _LIMITS["actor"])
    repository = _optional(event.repository, _LIMITS["repository"])
    tag = _optional(event.tag, _LIMITS["tag"])
    digest = _optional(event.digest, _LIMITS["digest"])
    client_addr = _optional(event.client_addr, _LIMITS["client_addr"])
    user_agent = _optional(event.user_agent, _LIMITS["user_agent"])
    request_id = _optional(event.request_id, _LIMITS["request_id"])
    details = event.details
    if type(details) is SharedDetails:
        details_json = details.json
    else:
        details_json = _CANONICAL.encode(dict(details)) if details else "{}"
    # The canonical text (sorted keys, no whitespace, ASCII) written out directly: the keys
    # are fixed and every value is a string, None or the id, so each value goes through the C
    # string escaper of the json module alone — a sixth of a JSONEncoder.encode of the dict.
    # tests/audit/test_seal.py checks the text equals canonical_json(hash_input(...)).
    t = event.time  # UTC (AuditEvent.__post_init__)
    stamp = t.isoformat(timespec="microseconds")[:-6] + "Z" if t.tzinfo is UTC else format_time(t)
    text = (
        f'{{"action":{_q(action)},"actor":{_q(actor)},"actor_type":{_q(event.actor_type)},'
        f'"client_addr":{_qn(client_addr)},"details":{_q(details_json)},'
        f'"digest":{_qn(digest)},"id":{int(record_id)},"prev_hash":{_q(prev_hash)},'
        f'"repository":{_qn(repository)},"request_id":{_qn(request_id)},'
        f'"result":{_q(event.result)},"tag":{_qn(tag)},"time":{_q(stamp)},'
        f'"user_agent":{_qn(user_agent)}}}'
    )
    digest_hex = hashlib.sha256(text.encode("ascii")).hexdigest()
    return AuditRecord(
        id=record_id,
        time=event.time,
        actor=actor,
        actor_type=event.actor_type,
        client_addr=client_addr,
        user_agent=user_agent,
        action=action,
        repository=repository,
        tag=tag,
        digest=digest,
        result=event.result,
        request_id=request_id,
        details_json=details_json,
        prev_hash=prev_hash,
        hash=digest_hex,
    )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of walking the chain. ``bad_id`` is the first record found bad (or missing)."""

    ok: bool
    records: int
    bad_id: int | None = None
    reason: str | None = None
    first_id: int | None = None
    last_id: int | None = None

    def message(self) -> str:
        if self.ok:
            return f"audit log intact: {self.records} records"
        return f"audit log NOT intact: record {self.bad_id}: {self.reason}"


class ChainVerifier:
    """Checks records fed in id order against the anchor (usable on a database or an export)."""

    def __init__(self, after_id: int, after_hash: str) -> None:
        self.expected_id = after_id + 1
        self.expected_prev = after_hash
        self.anchor_id = after_id
        self.count = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.failure: VerifyResult | None = None

    def feed(self, rec: AuditRecord) -> bool:
        """False (and ``failure`` set) at the first bad record."""
        if self.failure is not None:
            return False
        bad = self._check(rec)
        if bad is not None:
            self.failure = VerifyResult(False, self.count, bad[0], bad[1], self.first_id, rec.id)
            return False
        self.count += 1
        self.first_id = rec.id if self.first_id is None else self.first_id
        self.last_id = rec.id
        self.expected_id = rec.id + 1
        self.expected_prev = rec.hash
        return True

    def _check(self, rec: AuditRecord) -> tuple[int, str] | None:
        if rec.id <= self.anchor_id:
            return rec.id, (
                f"inserted: id {rec.id} is at or before the retention anchor "
                f"(records through {self.anchor_id} were pruned)"
            )
        if rec.id < self.expected_id:  # only possible when fed out of order
            return rec.id, f"out of order: expected id {self.expected_id}"
        if rec.id > self.expected_id:
            missing = (
                str(self.expected_id)
                if rec.id == self.expected_id + 1
                else f"{self.expected_id}..{rec.id - 1}"
            )
            return self.expected_id, f"removed: record(s) {missing} missing before record {rec.id}"
        if rec.computed_hash() != rec.hash:
            return rec.id, "altered: its contents do not match its hash"
        if rec.prev_hash != self.expected_prev:
            before = (
                f"record {rec.id - 1}" if rec.id - 1 > self.anchor_id else "the retention anchor"
            )
            return rec.id, (
                f"broken link: prev_hash does not match the hash of {before} "
                "(a record was replaced, inserted or re-hashed)"
            )
        return None

    def finish(self, head_id: int | None = None, head_hash: str | None = None) -> VerifyResult:
        """The verdict; with the recorded head, records cut from the end are detected too."""
        if self.failure is not None:
            return self.failure
        last_id = self.expected_id - 1
        if head_id is not None:
            if last_id < head_id:
                missing = str(head_id) if last_id + 1 == head_id else f"{last_id + 1}..{head_id}"
                return VerifyResult(
                    False,
                    self.count,
                    last_id + 1,
                    f"removed: record(s) {missing} missing at the end of the log "
                    f"(the head is recorded at id {head_id})",
                    self.first_id,
                    self.last_id,
                )
            if last_id > head_id:
                return VerifyResult(
                    False,
                    self.count,
                    head_id + 1,
                    f"inserted: record {head_id + 1} follows the recorded head (id {head_id})",
                    self.first_id,
                    self.last_id,
                )
            if head_hash is not None and self.expected_prev != head_hash:
                return VerifyResult(
                    False,
                    self.count,
                    last_id,
                    "altered: the last record's hash differs from the recorded head hash",
                    self.first_id,
                    self.last_id,
                )
        return VerifyResult(True, self.count, None, None, self.first_id, self.last_id)
