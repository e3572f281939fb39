"""A namespace's effective trust configuration, from its own entries and the system default's.

What the operator configures is stored per namespace (``*`` is the system default) as named
entries (trust_entries) and settings (trust_namespaces). A repository ``org/app`` is verified
against the *merge* of ``*`` and ``org``: every entry of both, an entry of ``org`` shadowing one
of ``*`` with the same name (and kind family), and ``org``'s Sigstore trust root, Notation trust
policy and Rekor requirement where it sets them, else ``*``'s.

Without a Notation trust policy document, a default statement applies: registry scope ``*``,
level ``strict``, every configured Notation trust store, any identity (``*``) — so that
``moorage trust add-notation-store`` alone makes Notation signatures verifiable, as the
contract's commands promise; an operator who wants scopes or identities sets the document.

The configuration version of a repository in ``org`` is ``"<version of *>.<version of org>"``:
results are stored under it, and any change to either namespace makes them stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .model import (
    CosignPKI,
    KeylessIdentity,
    NamedKey,
    NotationTrustStore,
    TrustConfig,
    TrustConfigError,
)
from .queries import EntryRow, NamespaceRow

SYSTEM = "*"
KEY, KEYLESS, PKI = "key", "keyless", "pki"
STORE_TYPES = ("ca", "signingAuthority", "tsa")
STORE_KINDS = {f"notation-{t}": t for t in STORE_TYPES}
SIGNER_KINDS = (KEY, KEYLESS, PKI)  # one name space: a policy names them bare
ALL_KINDS = (*SIGNER_KINDS, *STORE_KINDS)
MAX_PEM = 256 * 1024
MAX_DOCUMENT = 1024 * 1024
MAX_ENTRIES = 500  # per namespace
_NAMESPACE_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*\Z")  # organization names


def valid_namespace(name: str) -> bool:
    return name == SYSTEM or (2 <= len(name) <= 64 and _NAMESPACE_RE.match(name) is not None)


def namespace_of_target(target: str) -> str:
    """``*`` → ``*``; ``org`` → ``org``; ``org/app`` → ``org``."""
    return target.split("/", 1)[0] if target != SYSTEM else SYSTEM


def config_version(versions: dict[str, int], namespace: str) -> str:
    return f"{versions.get(SYSTEM, 0)}.{versions.get(namespace, 0) if namespace != SYSTEM else 0}"


def store_kind(store_type: str) -> str:
    if store_type not in STORE_TYPES:
        raise TrustConfigError(f"trust store type must be one of {', '.join(STORE_TYPES)}")
    return f"notation-{store_type}"


# --- normalising what an operator supplies --------------------------------------------------


def pem_certificates(data: bytes | str, what: str) -> list[str]:
    """PEM or DER certificates → a list of PEM texts (refused with a reason otherwise)."""
    from cryptography import x509  # on first use (see trust/service.py)
    from cryptography.hazmat.primitives import serialization

    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_PEM:
        raise TrustConfigError(f"{what} is larger than {MAX_PEM} bytes")
    try:
        if b"-----BEGIN" in raw:
            certs = x509.load_pem_x509_certificates(raw)
        else:
            certs = [x509.load_der_x509_certificate(raw)]
    except ValueError as exc:
        raise TrustConfigError(f"{what} holds no readable certificate: {exc}") from None
    if not certs:
        raise TrustConfigError(f"{what} holds no certificate")
    return [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]


def pem_public_key(data: bytes | str, what: str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_PEM:
        raise TrustConfigError(f"{what} is larger than {MAX_PEM} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TrustConfigError(f"{what} is not a PEM public key") from None
    if "-----BEGIN PUBLIC KEY-----" not in text:
        raise TrustConfigError(f"{what} is not a PEM public key (-----BEGIN PUBLIC KEY-----)")
    return text.strip() + "\n"


def json_document(data: bytes | str | dict[str, Any], what: str) -> str:
    """A JSON object as compact text (bounded)."""
    if isinstance(data, dict):
        text = json.dumps(data, separators=(",", ":"))
    else:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if len(text) > MAX_DOCUMENT:
        raise TrustConfigError(f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TrustConfigError(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise TrustConfigError(f"{what} must be a JSON object")
    return text


# --- merging ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamespaceData:
    row: NamespaceRow | None
    entries: tuple[EntryRow, ...]


def _merge(star: Sequence[EntryRow], own: Sequence[EntryRow]) -> list[EntryRow]:
    """*own* shadows *star* by name among signers, by (type, name) among trust stores."""

    def key(e: EntryRow) -> tuple[str, str]:
        return ("signer" if e.kind in SIGNER_KINDS else e.kind, e.name)

    merged = {key(e): e for e in star}
    merged.update({key(e): e for e in own})
    return sorted(merged.values(), key=lambda e: (e.kind, e.name))


def _entry_config(e: EntryRow) -> tuple[str, Any]:
    s = e.spec
    if e.kind == KEY:
        return "key", NamedKey(e.name, str(s["public_key"]).encode())
    if e.kind == KEYLESS:
        return "keyless", KeylessIdentity(
            e.name,
            str(s["identity"]),
            str(s["issuer"]),
            bool(s.get("identity_regex")),
            bool(s.get("issuer_regex")),
        )
    if e.kind == PKI:
        return "pki", CosignPKI(
            e.name,
            str(s["roots"]).encode(),
            str(s.get("intermediates") or "").encode(),
            subject_email=s.get("email") or None,
            subject_hostname=s.get("hostname") or None,
        )
    store_type = STORE_KINDS[e.kind]
    return "store", NotationTrustStore(
        store_type,  # type: ignore[arg-type]
        e.name,
        tuple(str(c).encode() for c in s.get("certificates", [])),
    )


def default_notation_policy(stores: Iterable[NotationTrustStore]) -> bytes | None:
    refs = [f"{s.type}:{s.name}" for s in stores]
    if not any(r.startswith(("ca:", "signingAuthority:")) for r in refs):
        return None
    return json.dumps(
        {
            "version": "1.0",
            "trustPolicies": [
                {
                    "name": "moorage-default",
                    "registryScopes": ["*"],
                    "signatureVerification": {"level": "strict"},
                    "trustStores": refs,
                    "trustedIdentities": ["*"],
                }
            ],
        }
    ).encode()


def effective_config(star: NamespaceData, own: NamespaceData | None, version: str) -> TrustConfig:
    """The TrustConfig a repository of *own*'s namespace is verified with (``own`` None: the
    system default's alone)."""
    merged = _merge(star.entries, own.entries if own else ())
    keys: list[NamedKey] = []
    keyless: list[KeylessIdentity] = []
    pki: list[CosignPKI] = []
    stores: list[NotationTrustStore] = []
    for e in merged:
        what, value = _entry_config(e)
        if what == "key":
            keys.append(value)
        elif what == "keyless":
            keyless.append(value)
        elif what == "pki":
            pki.append(value)
        else:
            stores.append(value)

    def setting(name: str) -> Any:
        for data in (own, star):
            if data is not None and data.row is not None:
                value = getattr(data.row, name)
                if value is not None:
                    return value
        return None

    root = setting("sigstore_trusted_root")
    policy = setting("notation_policy")
    return TrustConfig(
        keys=tuple(keys),
        keyless=tuple(keyless),
        cosign_pki=tuple(pki),
        sigstore_trusted_root=root.encode() if root else None,
        notation_stores=tuple(stores),
        notation_policy=policy.encode() if policy else default_notation_policy(stores),
        require_tlog_for_keys=bool(setting("require_tlog_for_keys")),
        version=version,
    )


def signer_names(config: TrustConfig) -> set[str]:
    """Names a pull policy may require: keys, keyless identities, private CAs, and Notation
    trust stores (bare ``NAME`` or ``ca:NAME``/``signingAuthority:NAME``)."""
    names = {k.name for k in config.keys} | {k.name for k in config.keyless}
    names |= {p.name for p in config.cosign_pki}
    for s in config.notation_stores:
        if s.type != "tsa":
            names |= {s.name, f"{s.type}:{s.name}"}
    return names


def expand_matched(matched: Iterable[str]) -> tuple[str, ...]:
    """A Notation match ``ca:NAME`` also answers to the bare store name ``NAME``."""
    out: list[str] = []
    for m in matched:
        out.append(m)
        if ":" in m:
            out.append(m.split(":", 1)[1])
    return tuple(dict.fromkeys(out))
