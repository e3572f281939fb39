"""Access-control settings (mounted at ``auth:`` in the configuration)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .ldap import LDAPConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenConfig(_Section):
    issuer: str = Field("moorage", description="`iss` of issued tokens.")
    service: str = Field(
        "moorage", description="`aud` of issued tokens; the `service` clients ask for."
    )
    lifetime: int = Field(300, ge=30, le=86400, description="Access token lifetime, seconds.")
    refresh_lifetime: int = Field(
        604800, ge=300, description="Refresh (offline) token lifetime, seconds."
    )
    key_overlap: int = Field(
        86400,
        ge=0,
        description="Seconds a superseded signing key keeps verifying after a rotation.",
    )
    key_encryption_secret: str | None = Field(
        None,
        min_length=16,
        description="Secret the signing keys' private halves are encrypted with in the "
        "database (AES-GCM, key derived by HKDF). Every node must have the same one; set it "
        "through the environment. Unset: stored unencrypted (a warning on PostgreSQL).",
    )


class LockoutConfig(_Section):
    """Password login throttling (moorage/auth/throttle.py, docs/security.md). Robot secrets
    and personal access tokens are never counted or throttled; a correct password is never
    locked out, at most delayed by ``duration``."""

    account_limit: int = Field(
        10,
        ge=1,
        description="Failed password logins per account, from one client address (and from "
        "anywhere, for addresses that failed too), per window before throttling.",
    )
    address_limit: int = Field(
        50,
        ge=1,
        description="Failed password logins per client address per window before throttling "
        "that address (accounts that logged in from it before are exempt).",
    )
    window: int = Field(900, ge=1, description="Counting window, seconds.")
    duration: int = Field(
        60,
        ge=1,
        description="While throttled, one password check per this many seconds (a correct "
        "password then succeeds); attempts in between get 429 with Retry-After, unchecked.",
    )


class SessionConfig(_Section):
    idle_minutes: float = Field(
        60,
        gt=0,
        le=10080,
        description="A web session ends after this many idle minutes (fractions allowed).",
    )
    max_hours: int = Field(
        12,
        ge=1,
        le=720,
        description="A web session ends this many hours after login, in use or not.",
    )


class AuthConfig(_Section):
    enabled: bool = Field(
        True,
        description="Require authentication (`moorage serve --no-auth` turns it off for local "
        "development and benchmarks only).",
    )
    anonymous_access: bool = Field(
        True,
        description="Anonymous clients may pull public repositories, and browse them in the "
        "REST API (`/api/v1/repositories`…) and the web UI's repository pages.",
    )
    realm: str | None = Field(
        None,
        description="Token endpoint URL announced in WWW-Authenticate. Default: this "
        "server's /auth/token as the client reached it.",
    )
    token: TokenConfig = Field(default_factory=TokenConfig)
    lockout: LockoutConfig = Field(default_factory=LockoutConfig)
    ldap: LDAPConfig = Field(default_factory=LDAPConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
