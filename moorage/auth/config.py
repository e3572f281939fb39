"""Access-control settings (mounted at ``auth:`` in the configuration)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .ldap_config import LDAPConfig, check_group_team_map, parse_group_team_map


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


class OIDCConfig(_Section):
    """``auth.oidc.*``: single sign-on with one OpenID Connect provider (moorage/auth/oidc.py
    is the client; moorage/ui/oidc.py the web login)."""

    enabled: bool = Field(
        False,
        description='Offer "Sign in with" an OpenID Connect provider on the login page '
        "(authorization-code flow with PKCE).",
    )
    issuer: str = Field(
        "", description="Issuer URL, exactly as the provider's discovery document states it."
    )
    client_id: str = Field("", description="Client id registered at the provider.")
    client_secret: str | None = Field(
        None, description="Client secret (confidential client; set it through the environment)."
    )
    redirect_uri: str | None = Field(
        None,
        description="Callback URL registered at the provider. Default: http.base_url (else the "
        "URL the browser used) + /auth/oidc/callback.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email", "groups"],
        description="Scopes requested (openid is always added). In the environment: "
        "space- or comma-separated.",
    )
    groups_claim: str = Field(
        "groups",
        description="Claim holding the user's groups; a dotted path for nested claims "
        "(Keycloak: realm_access.roles).",
    )
    username_claim: str = Field(
        "preferred_username",
        description="Claim used as the Moorage user name of a new account (falls back to the "
        "e-mail address, then sub); it must be a valid Moorage user name.",
    )
    group_team_map: dict[str, str] = Field(
        default_factory=dict,
        description="Provider group → Moorage team as org/team; the user's teams follow their "
        "groups at every sign-in. In the environment: JSON, e.g. "
        '{"platform-admins": "platform/admins"}.',
    )
    create_users: bool = Field(
        True,
        description="Create the Moorage account (source oidc) at a person's first sign-in. Off: "
        "only people whose account exists from an earlier sign-in may sign in. An existing "
        "local or LDAP account, or an organization's namespace, is never taken over.",
    )
    display_name: str = Field(
        "single sign-on", max_length=64, description="Provider name on the login button."
    )
    jwks_cache_seconds: float = Field(
        3600.0,
        gt=0,
        description="How long the provider's keys are cached (an unknown key id refetches them "
        "sooner).",
    )
    leeway_seconds: int = Field(60, ge=0, le=600, description="Clock skew tolerated on exp/iat.")
    http_timeout: float = Field(
        10.0, gt=0, description="Timeout of each request to the provider, seconds."
    )

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s for s in v.replace(",", " ").split() if s]
        return v

    @field_validator("group_team_map", mode="before")
    @classmethod
    def _parse_map(cls, v: Any) -> Any:
        return parse_group_team_map(v)

    @field_validator("group_team_map")
    @classmethod
    def _check_map(cls, v: dict[str, str]) -> dict[str, str]:
        return check_group_team_map(v)

    @model_validator(mode="after")
    def _complete(self) -> OIDCConfig:
        if self.enabled and not (self.issuer and self.client_id):
            raise ValueError("auth.oidc.issuer and auth.oidc.client_id are required when enabled")
        return self


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
    oidc: OIDCConfig = Field(default_factory=OIDCConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
