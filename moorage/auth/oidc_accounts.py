"""From a validated OpenID Connect identity (moorage/auth/oidc.py) to a Moorage account.

The account is the one linked to the identity's issuer and subject (``users.source = 'oidc'``,
``users.external_id = <issuer>#<sub>``): a provider's ``sub`` is stable and unique per issuer,
whereas user names and e-mail addresses can be changed or reused there. At a first sign-in the
account is created (``auth.oidc.create_users``) under the username claim, and only when that
name is free in every sense:

- no account of that name exists — a local account (with a password), an LDAP account or
  another subject's account is never taken over, whatever the provider says;
- no organization has that name, and no namespace of that name holds repositories: a user owns
  the namespace of their name, so such an account would get every right on those repositories
  (the namespace rule of access control, as for LDAP accounts).

Groups (``auth.oidc.groups_claim``) are mapped to teams through ``auth.oidc.group_team_map`` at
every sign-in: the user joins the mapped teams of their current groups and leaves those of
groups they lost (teams the provider manages are marked ``source = 'oidc'``).
"""

from __future__ import annotations

import logging

from ..db import access_queries as aq
from ..db import management_queries as mq
from .admin import USERNAME_RE
from .config import OIDCConfig
from .oidc import Identity
from .service import AccessService, Principal, _user_principal

log = logging.getLogger("moorage.auth.oidc")
SOURCE = "oidc"


class SignInRefused(Exception):
    """The identity is valid but may not sign in here; the message is safe to show."""


def external_id(identity: Identity) -> str:
    return f"{identity.issuer}#{identity.subject}"[:512]


def username_for(identity: Identity, config: OIDCConfig) -> str:
    """The Moorage user name for a new account: the username claim (else the e-mail's local
    part), lower-cased; it must already be a valid name (never rewritten into another)."""
    candidates = []
    claim = identity.claims.get(config.username_claim)
    if isinstance(claim, str):
        candidates.append(claim)
    if identity.email:
        candidates.append(identity.email.partition("@")[0])
    for value in candidates:
        name = value.strip().lower()
        if 2 <= len(name) <= 64 and USERNAME_RE.match(name):
            return name
    raise SignInRefused(
        "your user name at the provider is not a valid Moorage user name (2-64 lowercase "
        "letters and digits separated by '.', '_' or '-'); ask an administrator"
    )


def mapped_teams(groups: tuple[str, ...], config: OIDCConfig) -> list[tuple[str, str]]:
    """(organization, team) for each of *groups* that the group map names (case-insensitive)."""
    table = {g.casefold(): target for g, target in config.group_team_map.items()}
    out: list[tuple[str, str]] = []
    for group in groups:
        target = table.get(group.casefold())
        if target:
            org, _, team = target.partition("/")
            if (org, team) not in out:
                out.append((org, team))
    return out


async def sign_in(access: AccessService, config: OIDCConfig, identity: Identity) -> Principal:
    """The principal of *identity* (created at the first sign-in when allowed), its teams
    synchronized from its groups. Raises :class:`SignInRefused`."""
    link = external_id(identity)
    async with access.write_engine.begin() as conn:
        user = await aq.user_by_external_id(conn, SOURCE, link)
        if user is None:
            if not config.create_users:
                raise SignInRefused(
                    "there is no Moorage account for you yet and accounts are not created "
                    "at sign-in here; ask an administrator"
                )
            name = username_for(identity, config)
            taken = await aq.user_by_name(conn, name) is not None
            if (
                taken
                or await aq.org_by_name(conn, name) is not None
                or await mq.namespace_has_repositories(conn, name)
            ):
                log.warning(
                    "OpenID sign-in of %s (%s) refused: the name %s is taken",
                    identity.subject,
                    identity.issuer,
                    name,
                )
                raise SignInRefused(
                    f"the name {name} belongs to another account or namespace here; ask an "
                    "administrator"
                )
            uid = await aq.create_user(
                conn,
                name,
                None,
                email=identity.email,
                source=SOURCE,
                external_id=link,
                display_name=identity.name,
            )
            user = await aq.user_by_id(conn, uid)
            assert user is not None
            log.info("created account %s for OpenID subject %s", name, identity.subject)
        if user.disabled:
            raise SignInRefused("your Moorage account is disabled")
        managed = [
            (org, team)
            for target in config.group_team_map.values()
            for org, _, team in [target.partition("/")]
        ]
        await access._sync_directory_teams(
            conn, user.id, mapped_teams(identity.groups, config), managed, source=SOURCE
        )
        await aq.touch_login(conn, user.id)
    return _user_principal(user)
