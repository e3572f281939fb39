"""Notation trust policy documents (Notary Project trust policy, version 1.0), parsed and checked.

The document is the one ``notation policy import`` takes::

    {"version": "1.0", "trustPolicies": [{
        "name": "acme", "registryScopes": ["registry.example/app"],
        "signatureVerification": {"level": "strict", "override": {"expiry": "log"},
                                  "verifyTimestamp": "always"},
        "trustStores": ["ca:acme"],
        "trustedIdentities": ["x509.subject: C=US, ST=WA, O=acme, CN=builder"]}]}

Validation follows the specification's rules (unique names, one statement per scope, ``*`` alone,
``skip`` without stores or identities, known levels and overrides, C/ST/O in every trusted
identity DN) so a bad policy is refused when the operator saves it, not at pull time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from .util import load_object

Action = Literal["enforce", "log", "skip"]
CHECKS = ("integrity", "authenticity", "authenticTimestamp", "expiry", "revocation")
LEVELS: dict[str, dict[str, Action]] = {
    "strict": dict.fromkeys(CHECKS, "enforce"),
    "permissive": {
        "integrity": "enforce",
        "authenticity": "enforce",
        "authenticTimestamp": "log",
        "expiry": "log",
        "revocation": "log",
    },
    "audit": {"integrity": "enforce", **dict.fromkeys(CHECKS[1:], "log")},
    "skip": dict.fromkeys(CHECKS, "skip"),
}
STORE_TYPES = ("ca", "signingAuthority", "tsa")


class PolicyError(ValueError):
    """The trust policy document is invalid (reported when it is configured)."""


@dataclass(frozen=True, slots=True)
class TrustedIdentity:
    """``x509.subject:`` DN as attribute pairs; ``None`` for the ``*`` wildcard."""

    text: str
    attributes: tuple[tuple[str, str], ...] | None

    def matches(self, cert: x509.Certificate) -> bool:
        if self.attributes is None:
            return True
        subject = {(a.rfc4514_attribute_name.upper(), str(a.value)) for a in cert.subject}
        return all(pair in subject for pair in self.attributes)


@dataclass(frozen=True, slots=True)
class Statement:
    name: str
    scopes: tuple[str, ...]
    level: str
    actions: dict[str, Action]
    verify_timestamp: Literal["always", "afterCertExpiry"]
    trust_stores: tuple[tuple[str, str], ...]  # (type, name)
    identities: tuple[TrustedIdentity, ...]


@dataclass(frozen=True, slots=True)
class NotationPolicy:
    statements: tuple[Statement, ...]

    def statement_for(self, scope: str) -> Statement | None:
        """The statement whose registryScopes name *scope* exactly, else the ``*`` one."""
        wildcard = None
        for st in self.statements:
            if scope in st.scopes:
                return st
            if "*" in st.scopes:
                wildcard = st
        return wildcard


def parse_dn(text: str) -> tuple[tuple[str, str], ...]:
    """Split a DN like ``C=US, ST=WA, O=acme`` (RFC 4514 escapes, spaces after commas allowed)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        raise PolicyError(f"trusted identity {text!r} ends with a backslash")
    parts.append("".join(current))
    pairs: list[tuple[str, str]] = []
    for part in parts:
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip() or not value.strip():
            raise PolicyError(f"trusted identity {text!r}: {part.strip()!r} is not TYPE=value")
        pairs.append((key.strip().upper(), value.strip()))
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise PolicyError(f"trusted identity {text!r} repeats an attribute")
    for required in ("C", "ST", "O"):
        if required not in keys:
            raise PolicyError(f"trusted identity {text!r} lacks the mandatory {required}= attribute")
    return tuple(pairs)


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be an array of strings")
    return list(value)


def parse_policy(raw: bytes) -> NotationPolicy:
    """Parse and validate a trust policy document; raise :class:`PolicyError`."""
    try:
        doc = load_object(raw, "trust policy", 1024 * 1024)
    except Exception as exc:
        raise PolicyError(str(exc)) from None
    if doc.get("version") != "1.0":
        raise PolicyError(f"unsupported trust policy version {doc.get('version')!r} (want '1.0')")
    raw_statements = doc.get("trustPolicies")
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("trustPolicies must be a non-empty array")
    statements: list[Statement] = []
    seen_names: set[str] = set()
    seen_scopes: set[str] = set()
    for i, st in enumerate(raw_statements[:1000]):
        where = f"trustPolicies[{i}]"
        if not isinstance(st, dict):
            raise PolicyError(f"{where} must be an object")
        name = st.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}.name must be a non-empty string")
        if name in seen_names:
            raise PolicyError(f"trust policy name {name!r} is used twice")
        seen_names.add(name)
        scopes = _strings(st.get("registryScopes"), f"{name}.registryScopes")
        if not scopes:
            raise PolicyError(f"{name}: registryScopes must not be empty")
        if "*" in scopes and len(scopes) > 1:
            raise PolicyError(f"{name}: '*' must be the only registry scope of its statement")
        for scope in scopes:
            if scope in seen_scopes:
                raise PolicyError(f"registry scope {scope!r} appears in more than one statement")
            seen_scopes.add(scope)
        sv = st.get("signatureVerification")
        if not isinstance(sv, dict):
            raise PolicyError(f"{name}: signatureVerification must be an object")
        level = sv.get("level")
        if level not in LEVELS:
            raise PolicyError(f"{name}: unknown signatureVerification level {level!r}")
        actions = dict(LEVELS[level])
        override = sv.get("override") or {}
        if not isinstance(override, dict):
            raise PolicyError(f"{name}: override must be an object")
        if override and level == "skip":
            raise PolicyError(f"{name}: level 'skip' takes no override")
        for check, action in override.items():
            if check not in CHECKS[1:]:
                raise PolicyError(f"{name}: cannot override {check!r}")
            if action not in ("enforce", "log", "skip"):
                raise PolicyError(f"{name}: override {check} must be enforce, log or skip")
            if check == "authenticity" and action == "skip":
                raise PolicyError(f"{name}: authenticity cannot be skipped")
            actions[check] = action
        verify_ts = sv.get("verifyTimestamp", "always")
        if verify_ts not in ("always", "afterCertExpiry"):
            raise PolicyError(f"{name}: verifyTimestamp must be 'always' or 'afterCertExpiry'")
        stores_raw = _strings(st.get("trustStores"), f"{name}.trustStores")
        idents_raw = _strings(st.get("trustedIdentities"), f"{name}.trustedIdentities")
        if level == "skip":
            if stores_raw or idents_raw:
                raise PolicyError(f"{name}: level 'skip' takes no trustStores or trustedIdentities")
        elif not stores_raw or not idents_raw:
            raise PolicyError(f"{name}: trustStores and trustedIdentities must not be empty")
        stores: list[tuple[str, str]] = []
        for ref in stores_raw:
            kind, sep, store = ref.partition(":")
            if not sep or kind not in STORE_TYPES or not store:
                raise PolicyError(f"{name}: trust store {ref!r} is not 'ca|signingAuthority|tsa:NAME'")
            stores.append((kind, store))
        identities: list[TrustedIdentity] = []
        if "*" in idents_raw and len(idents_raw) > 1:
            raise PolicyError(f"{name}: '*' must be the only trusted identity")
        for ident in idents_raw:
            if ident == "*":
                identities.append(TrustedIdentity("*", None))
                continue
            prefix, sep, dn = ident.partition(":")
            if not sep or prefix.strip() != "x509.subject":
                raise PolicyError(f"{name}: trusted identity {ident!r} must start with 'x509.subject:'")
            identities.append(TrustedIdentity(ident, parse_dn(dn)))
        statements.append(
            Statement(
                name=name,
                scopes=tuple(scopes),
                level=level,
                actions=actions,
                verify_timestamp=verify_ts,
                trust_stores=tuple(stores),
                identities=tuple(identities),
            )
        )
    return NotationPolicy(tuple(statements))
