"""The types content-trust verification takes and returns.

Verification is pure apart from reading the signature artifact's blobs (through a caller-supplied
``fetch_blob``), so phase 2 (discovery on push, stored verdicts, enforcement) can call it from a
background job and cache the :class:`SignatureResult` per (subject digest, signature digest, trust
configuration version). Nothing here touches the database or the network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

# Bounds on attacker-supplied input (a signature artifact is pushed by anyone with push rights).
MAX_SIGNATURE_MANIFEST = 256 * 1024  # a signature manifest's own bytes
MAX_LAYERS = 32  # layers (signatures) read from one cosign .sig manifest
MAX_PAYLOAD = 1024 * 1024  # a simple-signing payload, a bundle or an envelope blob
MAX_CHAIN = 10  # certificates in a chain a signature brings
MAX_JSON_DEPTH = 32  # nesting of any JSON document parsed here


class SignatureKind(StrEnum):
    COSIGN = "cosign"
    NOTATION = "notation"


class ArtifactForm(StrEnum):
    """How a signature reached the registry; decides which verifier reads it."""

    COSIGN_TAG = "cosign-tag"  # a ``sha256-<hex>.sig`` manifest with simple-signing layers
    SIGSTORE_BUNDLE = "sigstore-bundle"  # an OCI 1.1 referrer carrying a Sigstore bundle
    NOTATION = "notation"  # an ``application/vnd.cncf.notary.signature`` referrer


@dataclass(frozen=True, slots=True)
class Subject:
    """The manifest whose signatures are checked.

    ``scope`` is what a Notation trust policy's ``registryScopes`` are matched against:
    ``<registry host>/<repository>`` (phase 2 builds it from the configured public host name).
    ``media_type`` and ``size`` are compared with the descriptor a Notation signature signs.
    """

    digest: str
    media_type: str
    size: int
    scope: str = ""


@dataclass(frozen=True, slots=True)
class SignatureArtifact:
    """A signature as stored: its manifest's digest and bytes and how it was recognised."""

    digest: str
    manifest: bytes
    form: ArtifactForm
    tag: str | None = None  # the cosign ``.sig`` tag it was found under, when it was


class TrustConfigError(ValueError):
    """The trust configuration cannot be used; the message names the entry and why.

    Defined here, with no dependencies, so that the service can name it without importing
    trust/config.py (and cryptography's X.509 machinery) before a configuration is compiled;
    trust/config.py re-exports it."""


# ``await fetch_blob(digest, limit)`` returns the blob's bytes. It raises (any exception) when the
# blob is missing or larger than ``limit``; the verifier turns that into a failed result.
FetchBlob = Callable[[str, int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed, as far as the signature shows it (shown to users; not an authorization)."""

    key: str | None = None  # configured key name that verified it (cosign key-based)
    subject: str | None = None  # certificate subject DN
    san: tuple[str, ...] = ()  # certificate SANs (emails, URIs): the keyless identity
    issuer: str | None = None  # OIDC issuer (keyless) or certificate issuer DN


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """One signature's outcome.

    ``verified`` is the cryptographic and trust-configuration verdict on this signature alone;
    ``reason`` says which check failed (or, for a pass, what was checked). ``matched`` names the
    trust entries (key names, keyless identity names, Notation trust stores as ``ca:NAME`` or
    ``signingAuthority:NAME``) that accepted it:
    the verdict policy's signer names are looked up there. ``warnings`` holds checks that failed
    but a Notation ``permissive``/``audit`` level only logs.
    """

    kind: SignatureKind
    digest: str
    verified: bool
    reason: str
    signer: Signer | None = None
    signed_at: datetime | None = None
    docker_reference: str | None = None
    matched: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamedKey:
    """A cosign public key by name (PEM SubjectPublicKeyInfo: ECDSA P-256/P-384, RSA, Ed25519)."""

    name: str
    pem: bytes


@dataclass(frozen=True, slots=True)
class KeylessIdentity:
    """A keyless signer: the certificate identity (SAN) and OIDC issuer a Fulcio cert must carry.

    With ``*_regex`` the value is a Python regular expression matched against the whole value
    (like cosign's ``--certificate-identity-regexp``).
    """

    name: str
    identity: str
    issuer: str
    identity_regex: bool = False
    issuer_regex: bool = False


@dataclass(frozen=True, slots=True)
class CosignPKI:
    """A private CA for cosign certificate signatures (cosign's ``--ca-roots``/``--ca-intermediates``).

    The certificate must chain to ``roots_pem`` (through the signature's chain annotation and
    ``intermediates_pem``) now, carry the code-signing EKU, and, when set, the SAN email/hostname.
    No transparency log is involved.
    """

    name: str
    roots_pem: bytes
    intermediates_pem: bytes = b""
    subject_email: str | None = None
    subject_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class NotationTrustStore:
    """A Notation trust store: ``type`` is ``ca``, ``signingAuthority`` or ``tsa``."""

    type: Literal["ca", "signingAuthority", "tsa"]
    name: str
    certificates_pem: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """What the operator trusts. Built once per configuration version and reused.

    ``sigstore_trusted_root`` is a Sigstore ``trusted_root.json`` (Fulcio CAs, Rekor and CT log
    keys, timestamp authorities): keyless signatures and Rekor entries are checked against it and
    nothing else, offline. ``notation_policy`` is a Notation trust policy document (JSON bytes in
    Notation's own format, version 1.0). With ``require_tlog_for_keys`` a key signature must also
    carry a verified Rekor entry (cosign's default); without it a Rekor entry present is checked
    when a Rekor key is configured and otherwise only noted.
    """

    keys: tuple[NamedKey, ...] = ()
    keyless: tuple[KeylessIdentity, ...] = ()
    cosign_pki: tuple[CosignPKI, ...] = ()
    sigstore_trusted_root: bytes | None = None
    notation_stores: tuple[NotationTrustStore, ...] = ()
    notation_policy: bytes | None = None
    require_tlog_for_keys: bool = False
    version: str = ""  # opaque; phase 2 keys its cache on it


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Which signatures make an image trusted.

    ``signers`` empty: any verified signature. Otherwise a signature counts when one of its
    ``matched`` names is listed; ``require_all`` demands every listed signer ("two-person" rule).
    ``docker_reference`` (exact, or a glob with ``*``/``?``) restricts cosign signatures to those
    whose signed ``docker-reference`` matches it; unset by default, because images signed
    elsewhere and then mirrored keep the reference they were signed under.
    """

    signers: tuple[str, ...] = ()
    require_all: bool = False
    docker_reference: str | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Literal["trusted", "untrusted", "unsigned"]
    reason: str
    missing: tuple[str, ...] = ()  # signer names still required (or "a verified signature")
    accepted: tuple[str, ...] = field(default=())  # signature digests that satisfied the policy


class Refused(Exception):
    """A check failed; the message is the user-facing reason. Never escapes the package."""
