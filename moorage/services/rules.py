"""The policy chain: content rules asked, in one fixed order, after the caller's permission.

Permission (moorage/auth/policy.py) decides *who* may push, pull or delete in a repository; the
rules here decide whether *this content* may be written, read or removed: a cache organization
refuses pushes, a quota refuses a manifest that would overshoot, an immutable tag refuses to
move, a vulnerability or signature policy refuses a pull. Capabilities add their rule in their
wiring module (``rt.ctx.rules.add(MyRule())``); the services call the chain — never the /v2
handlers or the API — so /v2, the REST API, the UI and background jobs obey the same rules.

Order (lower first): ``CACHE`` → ``QUOTA`` → ``IMMUTABILITY`` → ``VULNERABILITY`` →
``SIGNATURE``. The first rule that refuses wins and its message reaches the client
(403 ``DENIED`` on /v2, as docker and podman show it to the user).

Writes and deletes are checked inside the transaction that makes the change (a quota or an
immutable tag is decided on the same snapshot the change commits on); reads are checked after
the manifest was found, with no transaction, and must be cheap (a cached decision per digest):
manifest GET/HEAD is the registry's hot path. A rule that does not implement a hook costs
nothing on that path.

One hook allows instead of refusing: ``sparse_index``. An index is normally accepted only when
every child it lists is in the repository; a rule may accept an index whose children are not all
held (a *sparse index*: a replication or cache policy with a platform filter copies the index
byte for byte but only some of its platforms). The children left out are then answered with a
404 that says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from ..oci.manifest import ParsedManifest
from .errors import Denied

CACHE = 10
QUOTA = 20
IMMUTABILITY = 30
VULNERABILITY = 40
SIGNATURE = 50


class PolicyDenied(Denied):
    """A content rule refused; the message names the policy and what to do (403 ``DENIED``
    on /v2 and on the REST API)."""

    def __init__(self, message: str, detail: object = None, *, policy: str = "") -> None:
        super().__init__(message, detail)
        self.policy = policy


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, as the rules see it. ``may(action)`` answers whether the caller holds an
    action (``pull``, ``push``, ``delete``) on the repository at hand — e.g. the signer with push
    rights reading by digest is never blocked by a signature policy. Work the registry does on
    its own (jobs, replication, retention) passes ``Requester.system(...)``."""

    name: str
    kind: str  # user | robot | anonymous | system
    is_admin: bool
    may: Callable[[str], Awaitable[bool]]

    @staticmethod
    def system(name: str = "system") -> Requester:
        async def everything(_action: str) -> bool:
            return True

        return Requester(name, "system", True, everything)


@dataclass(frozen=True, slots=True)
class ManifestRead:
    repository: str
    reference: str  # as requested: a tag or a digest
    digest: str
    media_type: str
    by_digest: bool
    requester: Requester


@dataclass(frozen=True, slots=True)
class ManifestWrite:
    repository: str
    repository_id: int
    digest: str
    tags: tuple[str, ...]
    manifest: ParsedManifest
    size: int
    requester: Requester
    # Whether the repository held this manifest before the push (a new tag for it, or the same
    # push again): it then adds no bytes (a quota counts on it).
    existed: bool = False


@dataclass(frozen=True, slots=True)
class ReferenceDelete:
    repository: str
    repository_id: int
    tag: str | None  # the tag deleted, or None for a manifest by digest
    digest: str  # the manifest deleted, or the one the tag points to
    requester: Requester


class Rule:
    """Override the hooks the rule needs; raise PolicyDenied to refuse."""

    name: ClassVar[str] = "rule"
    order: ClassVar[int] = 100

    async def manifest_read(self, read: ManifestRead) -> None:
        return None

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        return None

    async def reference_delete(self, conn: AsyncConnection, delete: ReferenceDelete) -> None:
        return None

    async def sparse_index(
        self, conn: AsyncConnection, write: ManifestWrite, missing: tuple[str, ...]
    ) -> bool:
        """Whether this index may be stored although the children *missing* are not in the
        repository (asked inside the write's transaction, only when some are missing)."""
        return False


def _implements(rule: Rule, hook: str) -> bool:
    return getattr(type(rule), hook) is not getattr(Rule, hook)


class RuleChain:
    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._read: list[Rule] = []
        self._write: list[Rule] = []
        self._delete: list[Rule] = []
        self._sparse: list[Rule] = []

    def add(self, rule: Rule) -> None:
        self._rules.append(rule)
        self._rules.sort(key=lambda r: r.order)
        self._read = [r for r in self._rules if _implements(r, "manifest_read")]
        self._write = [r for r in self._rules if _implements(r, "manifest_write")]
        self._delete = [r for r in self._rules if _implements(r, "reference_delete")]
        self._sparse = [r for r in self._rules if _implements(r, "sparse_index")]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(self._rules)

    @property
    def checks_reads(self) -> bool:
        return bool(self._read)

    @property
    def checks_writes(self) -> bool:
        """Whether a manifest write must go through the rules (a write rule, or a rule that
        may accept a sparse index) rather than the raw write path."""
        return bool(self._write or self._sparse)

    async def manifest_read(self, read: ManifestRead) -> None:
        for rule in self._read:
            await rule.manifest_read(read)

    async def manifest_write(self, conn: AsyncConnection, write: ManifestWrite) -> None:
        for rule in self._write:
            await rule.manifest_write(conn, write)

    async def reference_delete(self, conn: AsyncConnection, delete: ReferenceDelete) -> None:
        for rule in self._delete:
            await rule.reference_delete(conn, delete)

    async def sparse_index(
        self, conn: AsyncConnection, write: ManifestWrite, missing: tuple[str, ...]
    ) -> bool:
        """True when a rule accepts the index without the children *missing*."""
        for rule in self._sparse:
            if await rule.sparse_index(conn, write, missing):
                return True
        return False
