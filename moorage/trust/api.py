"""/api/v1 operations of content trust (they join the core's route table and OpenAPI document).

The admission contract, for a Kubernetes admission webhook or a deploy pipeline:
``GET /repositories/{repository}/-/manifests/{reference}/trust`` answers exactly
``{"verdict": "trusted|untrusted|unsigned", "policy": {...}, "signatures": [{"kind", "digest",
"verified", "reason", "signer", "key", "signed_at"}]}``. The ``/signatures`` sibling gives every
field (status, signer identity parts, warnings, signed reference); the rest manages keys, trust
stores, keyless identities, trust roots, Notation policies and pull policies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ..api.routing import Auth, Call, Op
from ..oci.names import valid_name, valid_tag
from ..services.catalog import check_limit, decode_cursor, encode_cursor, valid_digest
from ..services.errors import Invalid
from ..services.models import Model
from . import queries as q
from .admin import NamespaceConfig, TrustAdmin
from .service import SignatureView, TrustReport
from .settings import KEY, KEYLESS, PKI, STORE_KINDS, valid_namespace

StoreType = Literal["ca", "signingAuthority", "tsa"]
EntryName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
Pem = Field(min_length=1, max_length=256 * 1024)


# --- bodies -----------------------------------------------------------------------------------


class KeyBody(Model):
    name: str = EntryName
    public_key: str = Pem


class KeylessBody(Model):
    name: str = EntryName
    identity: str = Field(min_length=1, max_length=1024)
    issuer: str = Field(min_length=1, max_length=1024)
    identity_regex: bool = False
    issuer_regex: bool = False


class CABody(Model):
    name: str = EntryName
    roots: str = Pem
    intermediates: str | None = Field(None, max_length=256 * 1024)
    email: str | None = Field(None, max_length=255)
    hostname: str | None = Field(None, max_length=255)


class StoreBody(Model):
    name: str = EntryName
    type: StoreType = "ca"
    certificates: list[str] = Field(min_length=1, max_length=100)


class TrustedRootBody(Model):
    trusted_root: dict[str, Any]


class NotationPolicyBody(Model):
    policy: dict[str, Any]


class SettingsBody(Model):
    require_tlog_for_keys: bool | None = None


class PolicyBody(Model):
    require_signature: bool
    signers: list[str] = Field(default_factory=list, max_length=32)
    require_all: bool = False
    docker_reference: str | None = Field(None, min_length=1, max_length=512)


# --- answers ----------------------------------------------------------------------------------


class Entry(Model):
    kind: Literal["key", "keyless", "ca", "notation-store"]
    name: str
    store_type: StoreType | None = None
    public_key: str | None = None
    identity: str | None = None
    issuer: str | None = None
    identity_regex: bool | None = None
    issuer_regex: bool | None = None
    certificates: int | None = None
    email: str | None = None
    hostname: str | None = None
    created_at: datetime
    created_by: str


class NamespaceTrust(Model):
    namespace: str
    version: int
    entries: list[Entry]
    sigstore_trusted_root: bool = Field(description="Whether a Sigstore trusted_root.json is set.")
    notation_policy: dict[str, Any] | None = Field(
        description="The Notation trust policy document; null: the default statement "
        "(scope *, strict, every store, any identity)."
    )
    require_tlog_for_keys: bool | None
    updated_at: datetime | None


class Namespaces(Model):
    items: list[str]


class AddedKey(Model):
    name: str
    fingerprint: str


class Queued(Model):
    job: int | None


class Policy(Model):
    target: str
    require_signature: bool
    signers: list[str]
    require_all: bool
    docker_reference: str | None
    updated_at: datetime
    updated_by: str


class Policies(Model):
    items: list[Policy]


class ContractSignature(Model):
    kind: Literal["cosign", "notation"]
    digest: str
    verified: bool
    reason: str
    signer: str | None
    key: str | None
    signed_at: datetime | None


class Contract(Model):
    verdict: Literal["trusted", "untrusted", "unsigned"]
    policy: dict[str, Any]
    signatures: list[ContractSignature]


class SignerIdentity(Model):
    key: str | None = None
    subject: str | None = None
    san: list[str] = Field(default_factory=list)
    issuer: str | None = None


class Signature(Model):
    kind: Literal["cosign", "notation"]
    form: str
    digest: str
    tag: str | None
    status: Literal["verified", "untrusted", "failed", "pending"]
    verified: bool
    reason: str
    signer: SignerIdentity | None
    key: str | None
    matched: list[str]
    signed_at: datetime | None
    docker_reference: str | None
    warnings: list[str]
    verified_at: datetime | None


class SignatureReport(Model):
    repository: str
    digest: str
    verdict: Literal["trusted", "untrusted", "unsigned"]
    reason: str
    missing: list[str]
    policy: Policy | None
    enforced: bool
    via_index: str | None
    config_version: str
    signatures: list[Signature]


class TagTrust(Model):
    tag: str
    digest: str
    verdict: Literal["trusted", "untrusted", "unsigned"]
    reason: str
    signatures: int
    verified: int


class TagTrustPage(Model):
    items: list[TagTrust]
    next_cursor: str | None
    policy: Policy | None
    enforced: bool


# --- conversions ------------------------------------------------------------------------------


def policy_model(row: q.PolicyRow | None) -> Policy | None:
    if row is None:
        return None
    return Policy(
        target=row.target,
        require_signature=row.require_signature,
        signers=list(row.signers),
        require_all=row.require_all,
        docker_reference=row.docker_reference,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def entry_model(e: q.EntryRow) -> Entry:
    s = e.spec
    base: dict[str, Any] = {"name": e.name, "created_at": e.created_at, "created_by": e.created_by}
    if e.kind == KEY:
        return Entry(kind="key", public_key=s.get("public_key"), **base)
    if e.kind == KEYLESS:
        return Entry(
            kind="keyless",
            identity=s.get("identity"),
            issuer=s.get("issuer"),
            identity_regex=bool(s.get("identity_regex")),
            issuer_regex=bool(s.get("issuer_regex")),
            **base,
        )
    if e.kind == PKI:
        return Entry(kind="ca", email=s.get("email"), hostname=s.get("hostname"), **base)
    return Entry(
        kind="notation-store",
        store_type=STORE_KINDS[e.kind],
        certificates=len(s.get("certificates", [])),
        **base,
    )


def namespace_model(cfg: NamespaceConfig) -> NamespaceTrust:
    import json

    return NamespaceTrust(
        namespace=cfg.namespace,
        version=cfg.version,
        entries=[entry_model(e) for e in cfg.entries],
        sigstore_trusted_root=cfg.sigstore_trusted_root,
        notation_policy=json.loads(cfg.notation_policy) if cfg.notation_policy else None,
        require_tlog_for_keys=cfg.require_tlog_for_keys,
        updated_at=cfg.updated_at,
    )


def contract(report: TrustReport) -> Contract:
    """The admission contract's exact shape."""
    p = report.policy
    policy: dict[str, Any] = {
        "target": p.target if p else None,
        "enforced": report.enforced,
        "require_signature": bool(p and p.require_signature),
        "signers": list(p.signers) if p else [],
        "require_all": bool(p and p.require_all),
        "docker_reference": p.docker_reference if p else None,
        "reason": report.verdict.reason,
        "missing": list(report.verdict.missing),
        "via_index": report.via_index,
    }
    return Contract(
        verdict=report.verdict.status,
        policy=policy,
        signatures=[
            ContractSignature(
                kind=s.kind,
                digest=s.digest,
                verified=s.status == "verified",
                reason=s.reason if s.status != "untrusted" else f"{s.reason}; not a signer the policy requires",
                signer=s.signer_text,
                key=s.key,
                signed_at=s.signed_at,
            )
            for s in report.signatures
        ],
    )


def signature_model(s: SignatureView) -> Signature:
    return Signature(
        kind=s.kind,
        form=s.form,
        digest=s.digest,
        tag=s.tag,
        status=s.status,
        verified=s.verified,
        reason=s.reason,
        signer=SignerIdentity(**s.signer) if s.signer else None,
        key=s.key,
        matched=list(s.matched),
        signed_at=s.signed_at,
        docker_reference=s.docker_reference,
        warnings=list(s.warnings),
        verified_at=s.verified_at,
    )


def report_model(r: TrustReport) -> SignatureReport:
    return SignatureReport(
        repository=r.repository,
        digest=r.digest,
        verdict=r.verdict.status,
        reason=r.verdict.reason,
        missing=list(r.verdict.missing),
        policy=policy_model(r.policy),
        enforced=r.enforced,
        via_index=r.via_index,
        config_version=r.config_version,
        signatures=[signature_model(s) for s in r.signatures],
    )


def _ns(c: Call) -> str:
    value = c.path["trust_namespace"]
    if not valid_namespace(value):
        raise Invalid("trust_namespace", f"invalid namespace {value[:80]!r} (an organization or *)")
    return value


def _target(c: Call) -> str:
    value = c.path["target"]
    if not (valid_namespace(value) or ("/" in value and valid_name(value))):
        raise Invalid("target", f"invalid target {value[:80]!r} (*, an organization or a repository)")
    return value


def _reference(value: str) -> str:
    if not (valid_tag(value) or valid_digest(value)):
        raise Invalid("reference", "reference is a tag or a digest (sha256:<64 hex>)")
    return value


# --- operations -------------------------------------------------------------------------------


def api_ops(admin: TrustAdmin) -> list[Op]:
    from ..api.schemas import PageQuery

    ns = "/trust/namespaces/{trust_namespace}"  # "*" too: not the core's {namespace}
    repo = "/repositories/{repository}"
    w = (400, 401, 403, 404, 409, 422)

    async def namespaces(c: Call) -> Namespaces:
        return Namespaces(items=await admin.namespaces(c.caller))

    async def get_namespace(c: Call) -> NamespaceTrust:
        return namespace_model(await admin.namespace_config(c.caller, _ns(c)))

    async def add_key(c: Call) -> AddedKey:
        b: KeyBody = c.body
        fp = await admin.add_key(c.caller, _ns(c), b.name, b.public_key)
        return AddedKey(name=b.name, fingerprint=fp)

    async def add_keyless(c: Call) -> NamespaceTrust:
        b: KeylessBody = c.body
        await admin.add_keyless(
            c.caller, _ns(c), b.name, identity=b.identity, issuer=b.issuer,
            identity_regex=b.identity_regex, issuer_regex=b.issuer_regex,
        )  # fmt: skip
        return await get_namespace(c)

    async def add_ca(c: Call) -> NamespaceTrust:
        b: CABody = c.body
        await admin.add_ca(
            c.caller, _ns(c), b.name, roots=b.roots, intermediates=b.intermediates,
            email=b.email, hostname=b.hostname,
        )  # fmt: skip
        return await get_namespace(c)

    async def add_store(c: Call) -> NamespaceTrust:
        b: StoreBody = c.body
        await admin.add_notation_store(
            c.caller, _ns(c), b.name, list(b.certificates), b.type
        )
        return await get_namespace(c)

    async def remove_signer(c: Call) -> None:
        await admin.remove_entry(c.caller, _ns(c), c.path["name"])

    async def remove_store(c: Call) -> None:
        store_type = c.path["store_type"]
        if store_type not in ("ca", "signingAuthority", "tsa"):
            raise Invalid("store_type", "store type is ca, signingAuthority or tsa")
        await admin.remove_entry(
            c.caller, _ns(c), c.path["name"], f"notation-{store_type}"
        )

    async def set_root(c: Call) -> None:
        await admin.set_trusted_root(c.caller, _ns(c), c.body.trusted_root)

    async def clear_root(c: Call) -> None:
        await admin.set_trusted_root(c.caller, _ns(c), None)

    async def set_notation(c: Call) -> None:
        await admin.set_notation_policy(c.caller, _ns(c), c.body.policy)

    async def clear_notation(c: Call) -> None:
        await admin.set_notation_policy(c.caller, _ns(c), None)

    async def settings(c: Call) -> NamespaceTrust:
        await admin.set_require_tlog(c.caller, _ns(c), c.body.require_tlog_for_keys)
        return await get_namespace(c)

    async def reverify(c: Call) -> Queued:
        return Queued(job=await admin.reverify(c.caller, _ns(c)))

    async def policies(c: Call) -> Policies:
        return Policies(items=[p for r in await admin.policies(c.caller) if (p := policy_model(r))])

    async def get_trust_policy(c: Call) -> Policy:
        target = _target(c)
        for row in await admin.policies(c.caller):
            if row.target == target:
                return policy_model(row)  # type: ignore[return-value]
        from ..services.errors import Missing

        raise Missing(f"no trust policy for {target}")

    async def put_trust_policy(c: Call) -> Policy:
        b: PolicyBody = c.body
        row = await admin.set_policy(
            c.caller, _target(c), require_signature=b.require_signature,
            signers=list(b.signers), require_all=b.require_all, docker_reference=b.docker_reference,
        )  # fmt: skip
        return policy_model(row)  # type: ignore[return-value]

    async def delete_trust_policy(c: Call) -> None:
        await admin.delete_policy(c.caller, _target(c))

    async def trust(c: Call) -> Contract:
        ref = _reference(c.path["reference"])
        return contract(await admin.report(c.caller, c.path["repository"], ref))

    async def signatures(c: Call) -> SignatureReport:
        ref = _reference(c.path["reference"])
        return report_model(await admin.report(c.caller, c.path["repository"], ref))

    async def tag_trust(c: Call) -> TagTrustPage:
        n = check_limit(c.query.limit)
        after = decode_cursor(c.query.cursor)
        rows, policy = await admin.tag_reports(c.caller, c.path["repository"], after, n + 1)
        items = [
            TagTrust(
                tag=tag, digest=r.digest, verdict=r.verdict.status, reason=r.verdict.reason,
                signatures=len(r.signatures),
                verified=sum(s.status == "verified" for s in r.signatures),
            )
            for tag, r in rows[:n]
        ]  # fmt: skip
        nxt = encode_cursor(rows[n - 1][0]) if len(rows) > n else None
        return TagTrustPage(
            items=items,
            next_cursor=nxt,
            policy=policy_model(policy),
            enforced=bool(policy and policy.require_signature),
        )

    P: Auth = "public"
    R: Auth = "read"
    RW: Auth = "write"
    T = "trust"
    return [
        Op("GET", "/trust/namespaces", namespaces, "Namespaces with trust configuration the caller may read (* is the system default)", T, R, response=Namespaces, errors=(401, 403)),
        Op("GET", ns, get_namespace, "A namespace's keys, keyless identities, CAs, Notation stores and documents", T, R, response=NamespaceTrust),
        Op("POST", ns + "/keys", add_key, "Trust a cosign public key (PEM) under a name", T, RW, body=KeyBody, response=AddedKey, status=201, errors=w),
        Op("POST", ns + "/keyless", add_keyless, "Trust a keyless (Fulcio) identity: certificate SAN and OIDC issuer, exact or regex; needs a Sigstore trusted root", T, RW, body=KeylessBody, response=NamespaceTrust, status=201, errors=w),
        Op("POST", ns + "/cas", add_ca, "Trust a private CA for cosign certificate signatures", T, RW, body=CABody, response=NamespaceTrust, status=201, errors=w),
        Op("POST", ns + "/notation-stores", add_store, "Add root certificates to a Notation trust store (created if new)", T, RW, body=StoreBody, response=NamespaceTrust, status=201, errors=w),
        Op("DELETE", ns + "/signers/{name}", remove_signer, "Remove a key, keyless identity or CA", T, RW, status=204, errors=w),
        Op("DELETE", ns + "/notation-stores/{store_type}/{name}", remove_store, "Remove a Notation trust store", T, RW, status=204, errors=w),
        Op("PUT", ns + "/trusted-root", set_root, "Set the Sigstore trusted_root.json (Fulcio, Rekor, CT logs, TSAs) used offline", T, RW, body=TrustedRootBody, status=204, errors=w),
        Op("DELETE", ns + "/trusted-root", clear_root, "Remove the Sigstore trusted root (the system default's applies)", T, RW, status=204, errors=w),
        Op("PUT", ns + "/notation-policy", set_notation, "Set the Notation trust policy document (Notation's format, version 1.0)", T, RW, body=NotationPolicyBody, status=204, errors=w),
        Op("DELETE", ns + "/notation-policy", clear_notation, "Remove the Notation trust policy (the default statement applies)", T, RW, status=204, errors=w),
        Op("PUT", ns + "/settings", settings, "Whether key signatures need a Rekor entry (null: inherit)", T, RW, body=SettingsBody, response=NamespaceTrust, errors=w),
        Op("POST", ns + "/reverify", reverify, "Queue a re-verification of the namespace's signatures", T, RW, response=Queued, status=202, errors=w),
        Op("GET", "/trust/policies", policies, "Signed-only pull policies the caller may read", T, R, response=Policies, errors=(401, 403)),
        Op("GET", "/trust/policies/{target}", get_trust_policy, "The pull policy of *, an organization or a repository", T, R, response=Policy, slash_params=frozenset({"target"})),
        Op("PUT", "/trust/policies/{target}", put_trust_policy, "Set a signed-only pull policy (any verified signature, one of the signers, or all of them)", T, RW, body=PolicyBody, response=Policy, errors=w, slash_params=frozenset({"target"})),
        Op("DELETE", "/trust/policies/{target}", delete_trust_policy, "Remove a pull policy (the organization's or the system's applies)", T, RW, status=204, errors=w, slash_params=frozenset({"target"})),
        Op("GET", repo + "/-/manifests/{reference}/trust", trust, "Admission contract: verdict, policy and signatures of a tag or digest", T, P, response=Contract),
        Op("GET", repo + "/-/manifests/{reference}/signatures", signatures, "Every signature of a tag or digest with status, signer identity, signing time and why", T, P, response=SignatureReport),
        Op("GET", repo + "/-/trust", tag_trust, "The trust verdict of each tag", T, P, query=PageQuery, response=TagTrustPage),
    ]  # fmt: skip
