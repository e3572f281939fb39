"""The ``auth.ldap`` settings (:class:`LDAPConfig`) and their checks: pure pydantic, so that
loading the configuration does not import the LDAP client library (ldap.py, which uses them).
The group → team map checks serve the OIDC settings too (config.py)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Organization and team names: one lowercase repository path component (the OCI name grammar),
# at most 64 characters (the width of organizations.name and teams.name).
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_ORG_TEAM_RE = re.compile(rf"^({_NAME_COMPONENT})/({_NAME_COMPONENT})$")
_MAX_NAME = 64

PLACEHOLDER_RE = re.compile(r"\{(username|user_dn)\}")
_BRACED_RE = re.compile(r"\{[^{}]*\}")


def parse_group_team_map(v: Any) -> Any:
    """A group → team map given as text (an environment variable): its JSON object; anything
    else as it came, for pydantic to check."""
    if isinstance(v, str):
        try:
            return json.loads(v) if v.strip() else {}
        except ValueError as exc:
            raise ValueError(f"group_team_map is not a JSON object: {exc}") from exc
    return v


def check_group_team_map(v: dict[str, str]) -> dict[str, str]:
    """A directory's (LDAP's, OpenID provider's) group → ``org/team`` map, checked."""
    for group, target in v.items():
        if not group.strip():
            raise ValueError("group_team_map: empty group name")
        m = _ORG_TEAM_RE.match(target)
        if not m or len(m.group(1)) > _MAX_NAME or len(m.group(2)) > _MAX_NAME:
            raise ValueError(
                f"group_team_map[{group!r}]: {target!r} is not org/team "
                "(lowercase letters, digits and . _ - separators, at most 64 each)"
            )
    return v


class LDAPConfig(BaseModel):
    """``auth.ldap``: authenticate users against an LDAP directory (OpenLDAP, 389-DS, AD...)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Authenticate users against an LDAP directory (in addition to local accounts).",
    )
    url: str = Field(
        "ldap://127.0.0.1:389",
        description="Directory server: ldap://HOST[:PORT] (use start_tls) or ldaps://HOST[:PORT] "
        "(TLS from the first byte). Default ports 389 and 636.",
    )
    start_tls: bool = Field(
        False,
        description="Upgrade an ldap:// connection with StartTLS before binding. Without it (or "
        "ldaps://) passwords cross the network in clear.",
    )
    ca_file: str | None = Field(
        None,
        description="PEM file of the CA certificate(s) the server certificate must chain to. "
        "Default: the system trust store.",
    )
    verify_tls: bool = Field(
        True,
        description="Verify the server certificate (chain and host name). Turning this off lets "
        "anyone in the network path read passwords: testing only.",
    )
    bind_dn: str | None = Field(
        None,
        description="DN of the service account that searches users and groups "
        "(e.g. cn=moorage,ou=services,dc=example,dc=org). Default: anonymous search.",
    )
    bind_password: str | None = Field(
        None,
        description="Password of the service account (prefer MOORAGE_AUTH_LDAP_BIND_PASSWORD).",
    )
    user_base_dn: str = Field(
        "",
        description="Subtree searched for users (e.g. ou=people,dc=example,dc=org). Required when "
        "enabled.",
    )
    user_filter: str = Field(
        "(uid={username})",
        description="Filter that finds a user by login name; {username} is replaced by the name "
        "typed, escaped per RFC 4515. Exactly one entry must match. "
        "Active Directory: (&(objectClass=user)(sAMAccountName={username})).",
    )
    username_attribute: str = Field(
        "uid",
        description="Attribute holding the canonical username Moorage records "
        "(AD: sAMAccountName).",
    )
    email_attribute: str = Field("mail", description="Attribute holding the e-mail address.")
    display_name_attribute: str = Field(
        "cn", description="Attribute holding the display name (e.g. cn or displayName)."
    )
    group_base_dn: str | None = Field(
        None,
        description="Subtree searched for the user's groups (e.g. ou=groups,dc=example,dc=org). "
        "Default: groups are not looked up.",
    )
    group_filter: str = Field(
        "(|(member={user_dn})(uniqueMember={user_dn})(memberUid={username}))",
        description="Filter that finds the user's groups; {user_dn} is the user's DN and "
        "{username} the canonical username, both escaped per RFC 4515. Covers groupOfNames, "
        "groupOfUniqueNames and posixGroup. AD nested groups: "
        "(member:1.2.840.113556.1.4.1941:={user_dn}).",
    )
    group_name_attribute: str = Field(
        "cn", description="Attribute holding a group's name (its DN is used when absent)."
    )
    timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds allowed for connecting and for each LDAP operation.",
    )
    group_team_map: dict[str, str] = Field(
        default_factory=dict,
        description="LDAP group (name, or DN) → Moorage team as org/team; members of the group are "
        "put in the team at login. Names match case-insensitively. As an environment variable: "
        'JSON, e.g. {"registry-admins": "platform/admins"}.',
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parse_ldap_url(v)
        return v

    @field_validator("user_filter")
    @classmethod
    def _check_user_filter(cls, v: str) -> str:
        _check_filter_template(v, required=("username",))
        return v

    @field_validator("group_filter")
    @classmethod
    def _check_group_filter(cls, v: str) -> str:
        _check_filter_template(v, required=())
        if not PLACEHOLDER_RE.search(v):
            raise ValueError("group_filter must contain {user_dn} or {username}")
        return v

    @field_validator("group_team_map", mode="before")
    @classmethod
    def _parse_group_team_map(cls, v: Any) -> Any:
        return parse_group_team_map(v)  # from the environment: JSON

    @field_validator("group_team_map")
    @classmethod
    def _check_group_team_map(cls, v: dict[str, str]) -> dict[str, str]:
        return check_group_team_map(v)

    @model_validator(mode="after")
    def _check_consistency(self) -> LDAPConfig:
        scheme = urlsplit(self.url).scheme.lower()
        if self.start_tls and scheme == "ldaps":
            raise ValueError("start_tls applies to ldap:// URLs; ldaps:// is TLS already")
        if self.bind_password and not self.bind_dn:
            raise ValueError("bind_password is set but bind_dn is not")
        if self.bind_dn and not self.bind_password:
            raise ValueError("bind_dn needs bind_password (an empty password is an anonymous bind)")
        if self.enabled and not self.user_base_dn.strip():
            raise ValueError("user_base_dn is required when LDAP is enabled")
        return self


def parse_ldap_url(url: str) -> tuple[str, str, int]:
    """``ldap[s]://host[:port][/]`` → (scheme, host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid LDAP URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise ValueError(f"LDAP URL must start with ldap:// or ldaps://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"LDAP URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"LDAP URL {url!r} must be ldap[s]://HOST[:PORT] only")
    return scheme, parts.hostname, port or (636 if scheme == "ldaps" else 389)


def _check_filter_template(template: str, required: tuple[str, ...]) -> None:
    for braced in _BRACED_RE.findall(template):
        if not PLACEHOLDER_RE.fullmatch(braced):
            raise ValueError(f"unknown placeholder {braced} in filter {template!r}")
    for name in required:
        if "{" + name + "}" not in template:
            raise ValueError(f"filter {template!r} must contain {{{name}}}")
    sample = PLACEHOLDER_RE.sub("x", template).strip()
    depth = 0
    for ch in sample:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if not (sample.startswith("(") and sample.endswith(")")) or depth != 0:
        raise ValueError(f"filter {template!r} is not a parenthesized LDAP filter")
