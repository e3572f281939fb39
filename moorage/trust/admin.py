"""Managing content trust (the REST API, the web UI and ``moorage trust ...`` share it).

Who may change what: the system default (``*``) — system administrators; an organization's
trust configuration and policy — its admins; a repository's policy — its admins (the ``admin``
role on it). Command-line commands act as the system (a ``system`` principal). Reading a
namespace's configuration needs membership of it (``*``: any signed-in account).

Every change is validated before it is stored — an entry is parsed and the namespace's whole
effective configuration compiled (moorage.trust.compile_trust) in the transaction that saves it,
so a bad key, certificate, trust root or Notation policy is refused with
:class:`~moorage.trust.TrustConfigError`'s message (422 on the API) rather than failing
verification later — then audited (``AuditLog.record_now``), and a configuration change raises
the namespace's version and queues the background re-verification of its signatures.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth.scopes import ADMIN
from ..auth.service import Principal
from ..db import job_queries
from ..db import queries as core
from ..oci.names import valid_name
from ..services.errors import Conflict, Denied, Invalid, Missing
from ..services.management import AdminService, Caller
from . import queries as q
from .model import TrustConfigError
from .service import TrustReport, TrustService
from .settings import (
    ALL_KINDS,
    KEY,
    KEYLESS,
    PKI,
    SIGNER_KINDS,
    STORE_KINDS,
    SYSTEM,
    json_document,
    namespace_of_target,
    pem_certificates,
    pem_public_key,
    signer_names,
    store_kind,
    valid_namespace,
)
from .subscribers import REVERIFY_JOB

MAX_SIGNERS = 32


def system_caller(name: str) -> Caller:
    """The caller of a command-line command (audited as a ``system`` actor)."""
    return Caller(Principal("system", name, is_admin=True))


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    namespace: str
    version: int
    entries: list[q.EntryRow]
    sigstore_trusted_root: bool
    notation_policy: str | None
    require_tlog_for_keys: bool | None
    updated_at: datetime | None


def fingerprint(pem: str) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo (what ``cosign`` users compare)."""
    key = serialization.load_pem_public_key(pem.encode())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


class TrustAdmin(AdminService):
    """Trust configuration, pull policies and trust reports, authorized and audited."""

    trust: TrustService

    def bind(self, trust: TrustService) -> TrustAdmin:
        self.trust = trust
        return self

    # --- authorization ----------------------------------------------------------------------

    @staticmethod
    def _is_system(c: Caller) -> bool:
        return c.principal.kind == "system"

    async def _manage(self, c: Caller, namespace: str) -> None:
        if not valid_namespace(namespace):
            raise Invalid("namespace", f"invalid namespace {namespace[:80]!r} (an organization or *)")
        if self._is_system(c):
            return
        if not c.principal.may_use_api(write=True):
            raise Denied("this token lacks the api:write scope")
        if namespace == SYSTEM:
            self._sysadmin(c)
        else:
            await self._org_admin(c, namespace)

    async def _read_namespace(self, c: Caller, namespace: str) -> None:
        if not valid_namespace(namespace):
            raise Invalid("namespace", f"invalid namespace {namespace[:80]!r} (an organization or *)")
        if self._is_system(c):
            return
        p = c.principal
        if p.anonymous:
            raise Denied("sign in to read trust configuration")
        if namespace == SYSTEM or (p.kind == "user" and p.is_admin):
            return
        await self._org_reader(c, namespace)

    async def _manage_policy(self, c: Caller, target: str) -> None:
        if target == SYSTEM or "/" not in target:
            await self._manage(c, target)
            return
        if not valid_name(target):
            raise Invalid("target", f"invalid repository name {target[:80]!r}")
        if self._is_system(c):
            return
        if not c.principal.may_use_api(write=True):
            raise Denied("this token lacks the api:write scope")
        await self._repo_action(c, target, ADMIN)

    async def may_manage(self, c: Caller, target: str) -> bool:
        """Whether the caller may change *target*'s configuration or policy (forms offered)."""
        if c.principal.anonymous:
            return False
        try:
            await self._manage_policy(c, target)
        except (Denied, Invalid):
            return False
        return True

    # --- plumbing ---------------------------------------------------------------------------

    async def _validate(self, conn: AsyncConnection, namespace: str) -> None:
        """Compile the effective configuration of *namespace* (of every namespace with trust
        settings for ``*``) as it stands in this transaction."""
        from .config import compile_trust  # cryptography's X.509 machinery, on first use

        names = await q.all_namespaces(conn) if namespace == SYSTEM else [namespace]
        for ns in [SYSTEM, *[n for n in names if n != SYSTEM]][:1000]:
            _, config = await self.trust.load_config(conn, ns)
            try:
                compile_trust(config)
            except TrustConfigError as exc:
                where = "" if ns == namespace else f" (in the configuration of {ns})"
                raise Invalid("config", f"{exc}{where}") from None

    async def _changed(self, conn: AsyncConnection, namespace: str, **settings: Any) -> int:
        version = await q.bump_namespace(conn, namespace, **settings)
        await self._validate(conn, namespace)
        await job_queries.enqueue(
            conn, REVERIFY_JOB, {"namespace": namespace}, dedupe_key=f"{namespace}:{version}"
        )
        return version

    async def _finish(self, c: Caller, action: str, **details: Any) -> None:
        self.trust.changed()
        await self._audit(c, action, details=details)

    @staticmethod
    def _name(name: str) -> str:
        if not isinstance(name, str) or not name or len(name) > 128:
            raise Invalid("name", "a name of 1 to 128 characters")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", name):
            raise Invalid("name", "names are letters, digits and . _ @ - (starting alphanumeric)")
        return name

    async def _add(
        self, c: Caller, namespace: str, kind: str, name: str, spec: dict[str, Any]
    ) -> int:
        await self._manage(c, namespace)
        name = self._name(name)
        async with self._tx() as conn:
            existing = await q.entries(conn, [namespace])
            if len([e for e in existing if e.kind == kind]) >= 500:
                raise Invalid("name", "a namespace holds at most 500 entries of a kind")
            family = SIGNER_KINDS if kind in SIGNER_KINDS else (kind,)
            clash = [e for e in existing if e.name == name and e.kind in family]
            if clash:
                raise Conflict(f"{namespace} already has a trust entry named {name} ({clash[0].kind})")
            other = SIGNER_KINDS if kind not in SIGNER_KINDS else tuple(STORE_KINDS)
            if any(e.name == name and e.kind in other for e in existing):
                raise Conflict(
                    f"{name} already names a {'key or identity' if kind not in SIGNER_KINDS else 'trust store'}"
                    f" in {namespace}; pull policies name both bare, so pick another name"
                )
            await q.add_entry(conn, namespace, kind, name, spec, c.principal.name)
            return await self._changed(conn, namespace)

    # --- entries ----------------------------------------------------------------------------

    async def add_key(self, c: Caller, namespace: str, name: str, public_key: str | bytes) -> str:
        """A named cosign public key (PEM); returns its fingerprint."""
        try:
            pem = pem_public_key(public_key, "public key")
            fp = fingerprint(pem)
        except TrustConfigError as exc:
            raise Invalid("public_key", str(exc)) from None
        except (ValueError, TypeError) as exc:
            raise Invalid("public_key", f"not a usable public key: {exc}") from None
        version = await self._add(c, namespace, KEY, name, {"public_key": pem})
        await self._finish(c, "trust.key.add", namespace=namespace, name=name, fingerprint=fp, version=version)
        return fp

    async def add_keyless(
        self,
        c: Caller,
        namespace: str,
        name: str,
        *,
        identity: str,
        issuer: str,
        identity_regex: bool = False,
        issuer_regex: bool = False,
    ) -> None:
        for field, value in (("identity", identity), ("issuer", issuer)):
            if not isinstance(value, str) or not value or len(value) > 1024 or "\x00" in value:
                raise Invalid(field, f"{field} is text of 1 to 1024 characters")
        spec = {
            "identity": identity,
            "issuer": issuer,
            "identity_regex": bool(identity_regex),
            "issuer_regex": bool(issuer_regex),
        }
        version = await self._add(c, namespace, KEYLESS, name, spec)
        await self._finish(c, "trust.keyless.add", namespace=namespace, name=name, version=version, **spec)

    async def add_ca(
        self,
        c: Caller,
        namespace: str,
        name: str,
        *,
        roots: bytes | str,
        intermediates: bytes | str | None = None,
        email: str | None = None,
        hostname: str | None = None,
    ) -> None:
        """A private CA for cosign certificate signatures (cosign's ``--ca-roots``)."""
        try:
            spec: dict[str, Any] = {
                "roots": "".join(pem_certificates(roots, "roots")),
                "intermediates": "".join(pem_certificates(intermediates, "intermediates"))
                if intermediates
                else "",
                "email": email or None,
                "hostname": hostname or None,
            }
        except TrustConfigError as exc:
            raise Invalid("certificates", str(exc)) from None
        version = await self._add(c, namespace, PKI, name, spec)
        await self._finish(c, "trust.ca.add", namespace=namespace, name=name, version=version, email=email, hostname=hostname)

    async def add_notation_store(
        self,
        c: Caller,
        namespace: str,
        name: str,
        certificates: list[bytes | str],
        store_type: str = "ca",
    ) -> int:
        """A Notation trust store (certificates added to it when it exists, like ``notation
        cert add``); returns how many certificates it holds."""
        try:
            kind = store_kind(store_type)
            certs: list[str] = []
            for i, data in enumerate(certificates[:100]):
                certs += pem_certificates(data, f"certificate {i + 1}")
        except TrustConfigError as exc:
            raise Invalid("certificates", str(exc)) from None
        certs = list(dict.fromkeys(certs))
        if not certs:
            raise Invalid("certificates", "give at least one certificate")
        await self._manage(c, namespace)
        name = self._name(name)
        async with self._tx() as conn:
            existing = [e for e in await q.entries(conn, [namespace]) if e.kind == kind and e.name == name]
            if existing:
                merged = list(dict.fromkeys([*existing[0].spec.get("certificates", []), *certs]))[:200]
                await q.remove_entry(conn, namespace, [kind], name)
                await q.add_entry(conn, namespace, kind, name, {"certificates": merged}, c.principal.name)
                version = await self._changed(conn, namespace)
        if existing:
            count = len(merged)
        else:
            version = await self._add(c, namespace, kind, name, {"certificates": certs})
            count = len(certs)
        await self._finish(
            c, "trust.notation_store.add", namespace=namespace, name=name, type=store_type,
            certificates=count, version=version,
        )  # fmt: skip
        return count

    async def remove_entry(
        self, c: Caller, namespace: str, name: str, kind: str | None = None
    ) -> None:
        """Remove a key, identity or CA (*kind* None: whichever signer holds the name), or a
        Notation store (``notation-ca``, ...)."""
        await self._manage(c, namespace)
        kinds = [kind] if kind else list(SIGNER_KINDS)
        if any(k not in ALL_KINDS for k in kinds):
            raise Invalid("kind", f"kind is one of {', '.join(ALL_KINDS)}")
        async with self._tx() as conn:
            if not await q.remove_entry(conn, namespace, kinds, name):
                raise Missing(f"{namespace} has no trust entry {name}")
            version = await self._changed(conn, namespace)
        await self._finish(c, "trust.entry.remove", namespace=namespace, name=name, kind=kind, version=version)

    # --- namespace documents and settings --------------------------------------------------

    async def set_trusted_root(self, c: Caller, namespace: str, document: Any) -> None:
        """The Sigstore ``trusted_root.json`` keyless and Rekor checks use (None: remove)."""
        try:
            text = json_document(document, "trusted_root.json") if document is not None else None
        except TrustConfigError as exc:
            raise Invalid("trusted_root", str(exc)) from None
        await self._manage(c, namespace)
        async with self._tx() as conn:
            version = await self._changed(conn, namespace, sigstore_trusted_root=text)
        digest = hashlib.sha256(text.encode()).hexdigest() if text else None
        await self._finish(c, "trust.trusted_root.set", namespace=namespace, sha256=digest, version=version)

    async def set_notation_policy(self, c: Caller, namespace: str, document: Any) -> None:
        """A Notation trust policy document (Notation's format; None: the default statement)."""
        try:
            text = json_document(document, "trust policy") if document is not None else None
        except TrustConfigError as exc:
            raise Invalid("policy", str(exc)) from None
        await self._manage(c, namespace)
        async with self._tx() as conn:
            version = await self._changed(conn, namespace, notation_policy=text)
        digest = hashlib.sha256(text.encode()).hexdigest() if text else None
        await self._finish(c, "trust.notation_policy.set", namespace=namespace, sha256=digest, version=version)

    async def set_require_tlog(self, c: Caller, namespace: str, value: bool | None) -> None:
        await self._manage(c, namespace)
        async with self._tx() as conn:
            version = await self._changed(conn, namespace, require_tlog_for_keys=value)
        await self._finish(c, "trust.settings.set", namespace=namespace, require_tlog_for_keys=value, version=version)

    async def namespace_config(self, c: Caller, namespace: str) -> NamespaceConfig:
        await self._read_namespace(c, namespace)
        async with self.ctx.engine.connect() as conn:
            rows = await q.namespace_rows(conn, [namespace])
            entries = await q.entries(conn, [namespace])
        row = rows.get(namespace)
        return NamespaceConfig(
            namespace,
            row.version if row else 0,
            entries,
            bool(row and row.sigstore_trusted_root),
            row.notation_policy if row else None,
            row.require_tlog_for_keys if row else None,
            row.updated_at if row else None,
        )

    async def namespaces(self, c: Caller) -> list[str]:
        """Namespaces with trust settings the caller may read."""
        async with self.ctx.engine.connect() as conn:
            names = await q.all_namespaces(conn)
        out = []
        for ns in names:
            try:
                await self._read_namespace(c, ns)
            except (Denied, Invalid):
                continue
            out.append(ns)
        return out

    # --- pull policies ----------------------------------------------------------------------

    async def set_policy(
        self,
        c: Caller,
        target: str,
        *,
        require_signature: bool,
        signers: list[str] | None = None,
        require_all: bool = False,
        docker_reference: str | None = None,
    ) -> q.PolicyRow:
        """The signed-only policy of ``*``, an organization or a repository."""
        await self._manage_policy(c, target)
        names = list(dict.fromkeys(signers or []))
        if len(names) > MAX_SIGNERS:
            raise Invalid("signers", f"at most {MAX_SIGNERS} signers")
        if require_all and not names:
            raise Invalid("signers", "requiring all signers needs signers to require")
        if docker_reference is not None and (
            not docker_reference or len(docker_reference) > 512 or "\x00" in docker_reference
        ):
            raise Invalid("docker_reference", "docker_reference is a reference or glob of 1 to 512 characters")
        async with self._tx() as conn:
            _, config = await self.trust.load_config(conn, namespace_of_target(target))
            known = signer_names(config)
            unknown = [n for n in names if n not in known]
            if unknown:
                raise Invalid(
                    "signers",
                    f"no key, keyless identity, CA or Notation store named {', '.join(unknown)} "
                    f"is trusted for {target}",
                )
            await q.set_policy(
                conn,
                target,
                require_signature=require_signature,
                signers=names,
                require_all=require_all,
                docker_reference=docker_reference,
                by=c.principal.name,
            )
            row = (await q.all_policies(conn))[target]
        self.trust.changed()
        await self._audit(
            c,
            "trust.policy.set",
            repository=target if "/" in target else None,
            details={
                "target": target,
                "require_signature": require_signature,
                "signers": names,
                "require_all": require_all,
                "docker_reference": docker_reference,
            },
        )
        return row

    async def delete_policy(self, c: Caller, target: str) -> None:
        await self._manage_policy(c, target)
        async with self._tx() as conn:
            if not await q.delete_policy(conn, target):
                raise Missing(f"no trust policy for {target}")
        self.trust.changed()
        await self._audit(
            c, "trust.policy.delete", repository=target if "/" in target else None,
            details={"target": target},
        )  # fmt: skip

    async def policies(self, c: Caller) -> list[q.PolicyRow]:
        async with self.ctx.engine.connect() as conn:
            rows = await q.all_policies(conn)
        out = []
        for target in sorted(rows, key=lambda t: (t != SYSTEM, t)):
            try:
                await self._read_namespace(c, namespace_of_target(target))
            except (Denied, Invalid):
                continue
            out.append(rows[target])
        return out

    # --- jobs and reports ---------------------------------------------------------------------

    async def reverify(self, c: Caller, namespace: str) -> int | None:
        """Queue a re-verification of *namespace*'s signatures (normally automatic)."""
        await self._manage(c, namespace)
        async with self._tx() as conn:
            job = await job_queries.enqueue(
                conn, REVERIFY_JOB, {"namespace": namespace}, dedupe_key=f"{namespace}:manual"
            )
        await self._audit(c, "trust.reverify", details={"namespace": namespace, "job": job})
        return job

    async def _readable(self, c: Caller, repository: str) -> None:
        if not valid_name(repository):
            raise Invalid("repository", f"invalid repository name {repository[:300]!r}")
        if not self._is_system(c):
            actions = await self.access.allowed_actions(c.principal, repository)
            if "pull" not in actions:
                raise Denied(f"pulling from {repository} is not allowed")

    async def tag_reports(
        self, c: Caller, repository: str, after: str | None, limit: int
    ) -> tuple[list[tuple[str, TrustReport]], q.PolicyRow | None]:
        """The verdict of each tag (a page), from stored results."""
        await self._readable(c, repository)
        async with self.ctx.engine.connect() as conn:
            repo_id = await q.repository_id(conn, repository)
            if repo_id is None:
                raise Missing(f"no repository {repository}")
            rows = await q.tags_page(conn, repo_id, after, limit)
        reports = await self.trust.reports_for(repository, [d for _, d in rows])
        state = await self.trust.state()
        return [(t, reports[d]) for t, d in rows], state.policy_for(repository)

    async def report(self, c: Caller, repository: str, reference: str) -> TrustReport:
        """The trust report of a tag or digest the caller may pull."""
        await self._readable(c, repository)
        digest = reference
        if ":" not in reference:
            async with self.ctx.engine.connect() as conn:
                row = await core.manifest_by_tag(conn, repository, reference)
            if row is None:
                raise Missing(f"no manifest {reference} in {repository}")
            digest = row.digest
        report = await self.trust.report(repository, digest, inline=True, parents=True)
        if report is None:
            raise Missing(f"no manifest {reference} in {repository}")
        return report
