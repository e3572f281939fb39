"""Keyless identities (certificate SAN + OIDC issuer) as sigstore-python verification policies.

Exact identities use sigstore-python's own ``policy.Identity``; patterns (cosign's
``--certificate-identity-regexp``/``--certificate-oidc-issuer-regexp``) need a policy of our own
with the same ``verify(cert)`` shape, so both plug into ``Verifier.verify_*`` and ``AnyOf``.
"""

from __future__ import annotations

import re

from cryptography import x509
from sigstore.errors import VerificationError
from sigstore.verify.policy import AnyOf, Identity, VerificationPolicy

from .model import KeylessIdentity
from .util import oidc_issuer_of, sans_of


class PatternIdentity:
    """SAN and issuer matched by full-string regular expressions (or one of them exactly)."""

    def __init__(self, spec: KeylessIdentity) -> None:
        self._spec = spec
        self._identity = re.compile(spec.identity) if spec.identity_regex else None
        self._issuer = re.compile(spec.issuer) if spec.issuer_regex else None

    def verify(self, cert: x509.Certificate) -> None:
        issuer = oidc_issuer_of(cert)
        if issuer is None:
            raise VerificationError("certificate has no OIDC issuer extension")
        ok = self._issuer.fullmatch(issuer) if self._issuer else issuer == self._spec.issuer
        if not ok:
            raise VerificationError(f"certificate's OIDC issuer {issuer!r} does not match")
        sans = sans_of(cert)
        if self._identity is not None:
            if not any(self._identity.fullmatch(s) for s in sans):
                raise VerificationError(f"certificate's SANs {list(sans)} do not match the pattern")
        elif self._spec.identity not in sans:
            raise VerificationError(f"certificate's SANs {list(sans)} do not include the identity")


def policy_for(spec: KeylessIdentity) -> VerificationPolicy:
    if spec.identity_regex or spec.issuer_regex:
        return PatternIdentity(spec)
    return Identity(identity=spec.identity, issuer=spec.issuer)


def any_of(specs: tuple[KeylessIdentity, ...]) -> VerificationPolicy:
    return AnyOf([policy_for(s) for s in specs])


def matching(specs: tuple[KeylessIdentity, ...], cert: x509.Certificate) -> tuple[str, ...]:
    """Names of the identities the certificate satisfies."""
    out = []
    for spec in specs:
        try:
            policy_for(spec).verify(cert)
        except (VerificationError, x509.ExtensionNotFound, ValueError):
            continue
        out.append(spec.name)
    return tuple(out)
