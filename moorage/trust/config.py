"""A :class:`~moorage.trust.model.TrustConfig` parsed once into the objects verification uses.

Parsing refuses a bad configuration with :class:`TrustConfigError` naming the entry, so phase 2's
API can reject it when the operator saves it, rather than every verification failing later.
Compile once per configuration version and share it: verification never mutates it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cryptography import x509

from .keys import PublicKey, load_public_key
from .model import CosignPKI, KeylessIdentity, Refused, TrustConfig
from .model import TrustConfigError as TrustConfigError
from .notation_policy import NotationPolicy, PolicyError, parse_policy
from .sigstore_root import SigstoreRoot, TrustRootError
from .util import load_certificates, load_pem_certificates

# Key and keyless identity names; no ':' so they never collide with the "ca:NAME" and
# "signingAuthority:NAME" names under which Notation trust stores match signatures.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")


@dataclass(slots=True)
class CompiledTrust:
    config: TrustConfig
    keys: tuple[tuple[str, PublicKey], ...] = ()
    keyless: tuple[KeylessIdentity, ...] = ()
    pki: tuple[tuple[CosignPKI, list[x509.Certificate], list[x509.Certificate]], ...] = ()
    sigstore: SigstoreRoot | None = None
    stores: dict[tuple[str, str], list[x509.Certificate]] = field(default_factory=dict)
    notation_policy: NotationPolicy | None = None


def compile_trust(config: TrustConfig) -> CompiledTrust:
    names: set[str] = set()

    def claim(name: str, what: str) -> None:
        if not _NAME_RE.match(name):
            raise TrustConfigError(f"{what} name {name[:60]!r} is not a valid name")
        if name in names:
            raise TrustConfigError(f"{what} name {name!r} is already used by another trust entry")
        names.add(name)

    keys = []
    for named in config.keys:
        claim(named.name, "key")
        try:
            keys.append((named.name, load_public_key(named.pem)))
        except Refused as exc:
            raise TrustConfigError(f"key {named.name!r}: {exc}") from None
    for ident in config.keyless:
        claim(ident.name, "keyless identity")
        for value, is_regex in ((ident.identity, ident.identity_regex), (ident.issuer, ident.issuer_regex)):
            if not value:
                raise TrustConfigError(f"keyless identity {ident.name!r} needs an identity and an issuer")
            if is_regex:
                try:
                    re.compile(value)
                except re.error as exc:
                    raise TrustConfigError(f"keyless identity {ident.name!r}: bad pattern: {exc}") from None
    pki = []
    for spec in config.cosign_pki:
        claim(spec.name, "cosign PKI")
        try:
            roots = load_pem_certificates(spec.roots_pem, f"PKI {spec.name!r} roots", limit=1000)
            inters = (
                load_pem_certificates(spec.intermediates_pem, f"PKI {spec.name!r} intermediates", limit=1000)
                if spec.intermediates_pem.strip()
                else []
            )
        except Refused as exc:
            raise TrustConfigError(str(exc)) from None
        pki.append((spec, roots, inters))
    root = None
    if config.sigstore_trusted_root is not None:
        try:
            root = SigstoreRoot(config.sigstore_trusted_root)
        except TrustRootError as exc:
            raise TrustConfigError(str(exc)) from None
    if config.keyless and root is None:
        raise TrustConfigError("keyless identities need a Sigstore trusted_root.json")
    stores: dict[tuple[str, str], list[x509.Certificate]] = {}
    for store in config.notation_stores:
        if store.type not in ("ca", "signingAuthority", "tsa"):
            raise TrustConfigError(f"trust store {store.name!r}: unknown type {store.type!r}")
        if not _NAME_RE.match(store.name):
            raise TrustConfigError(f"trust store name {store.name[:60]!r} is not a valid name")
        certs: list[x509.Certificate] = []
        for i, pem in enumerate(store.certificates_pem):
            try:
                certs.extend(load_certificates(pem, f"trust store {store.name!r} file {i}"))
            except Refused as exc:
                raise TrustConfigError(str(exc)) from None
        if not certs:
            raise TrustConfigError(f"trust store {store.name!r} holds no certificate")
        stores.setdefault((store.type, store.name), []).extend(certs)
    policy = None
    if config.notation_policy is not None:
        try:
            policy = parse_policy(config.notation_policy)
        except PolicyError as exc:
            raise TrustConfigError(f"Notation trust policy: {exc}") from None
        for st in policy.statements:
            for ref in st.trust_stores:
                if ref not in stores:
                    raise TrustConfigError(
                        f"Notation trust policy {st.name!r} names trust store {ref[0]}:{ref[1]}, "
                        "which is not configured"
                    )
    return CompiledTrust(
        config=config,
        keys=tuple(keys),
        keyless=config.keyless,
        pki=tuple(pki),
        sigstore=root,
        stores=stores,
        notation_policy=policy,
    )
