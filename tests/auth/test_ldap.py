"""LDAP authentication against a real OpenLDAP slapd (tests/auth/slapd.py).

The shared directory runs with ``olcAllows: bind_anon_dn``: a bind with a DN and an empty password
*succeeds* there (as anonymous), so the empty-password test is against the real trap. It serves
StartTLS on ``url`` and TLS on ``ldaps_url`` with a CA made for the test session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from moorage.auth.ldap import (
    LDAPAuthenticator,
    LDAPConfig,
    LDAPIdentity,
    LDAPUnavailable,
    escape_filter_value,
    render_filter,
)

from .slapd import TOOL_ENV, Slapd, free_port, make_ca, missing_tools

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))

ALICE_PW = "alice-pw-1"
BOB_PW = "bob-pw-2"
ADMIN_PW = "admin-pw-3"
DUP_PW = "dup-pw-4"
ODD_PW = "pä ss:wörd*()\\ \"'"


@dataclass
class Directory:
    slapd: Slapd
    alice: str
    bob: str
    admin: str
    jsmith: str
    groups: dict[str, str]

    def auth(self, **overrides: Any) -> LDAPAuthenticator:
        return LDAPAuthenticator(LDAPConfig(**self.slapd.config(**overrides)))


@pytest.fixture(scope="module")
def directory() -> Iterator[Directory]:
    with Slapd(tls=True, allow_unauthenticated_bind=True) as ldap:
        alice = ldap.add_user(
            "alice", ALICE_PW, cn="Alice Liddell", mail="alice@example.org", extra_uids=["aliddell"]
        )
        bob = ldap.add_user("bob", BOB_PW, mail="bob@example.org")
        admin = ldap.add_user("admin", ADMIN_PW)
        ldap.add_user("carol", "carol-pw")
        ldap.add_user("dave", "dave-pw")
        ldap.add_user("erin", "erin-pw")
        # A DN with characters that mean something in a filter: ( ) and an escaped comma (\).
        jsmith = ldap.add_user("jsmith", "jsmith-pw", rdn="cn=Smith\\, John (ext)")
        ldap.add_user("we*ird", "weird-pw")
        ldap.add_user("corp\\svc", "corp-pw")
        ldap.add_user("odd", ODD_PW)
        # The same uid twice under the base: ambiguous.
        contractors = ldap.add_ou("contractors")
        ldap.add_user("dup", DUP_PW)
        ldap.add_user("dup", DUP_PW, parent=contractors)
        groups = {
            "devs": ldap.add_group("devs", [alice, bob]),  # groupOfNames / member
            "qa": ldap.add_group("QA", [alice], kind="groupOfUniqueNames"),  # uniqueMember
            "ops": ldap.add_group("ops", ["alice"], kind="posixGroup"),  # memberUid
            "admins": ldap.add_group("admins", [admin]),
            "carols": ldap.add_group("carols", ["uid=carol," + ldap.people_dn]),
            "daves": ldap.add_group(
                "daves", ["uid=dave," + ldap.people_dn], kind="groupOfUniqueNames"
            ),
            "erins": ldap.add_group("erins", ["erin"], kind="posixGroup"),
            "special": ldap.add_group("special", [jsmith]),
        }
        yield Directory(ldap, alice, bob, admin, jsmith, groups)


def search(ldap: Slapd, search_filter: str) -> list[str]:
    """DNs the service account finds with *search_filter* under the suffix (via ldapsearch)."""
    out = subprocess.run(
        [
            "ldapsearch", "-x", "-LLL", "-H", ldap.url, "-D", ldap.service_dn,
            "-w", ldap.service_password, "-b", ldap.suffix, search_filter, "1.1",
        ],
        capture_output=True, text=True, env={**os.environ, **TOOL_ENV}, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [line[4:] for line in out.splitlines() if line.startswith("dn: ")]


def whoami(ldap: Slapd, dn: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ldapwhoami", "-x", "-H", ldap.url, "-D", dn, "-w", password],
        capture_output=True, text=True, env={**os.environ, **TOOL_ENV}, timeout=30, check=False,
    )  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


# --- successful logins ------------------------------------------------------------------------


async def test_good_password_gives_identity_groups_and_teams(directory: Directory) -> None:
    auth = directory.auth(
        group_team_map={
            "devs": "acme/developers",
            "qa": "acme/qa",  # the group is "QA": names match case-insensitively
            directory.groups["ops"].upper(): "acme/ops",  # by DN (normalized)
            "admins": "acme/admins",  # alice is not in it
        }
    )
    identity = await auth.authenticate("alice", ALICE_PW)
    assert identity == LDAPIdentity(
        username="alice",
        dn=directory.alice,
        email="alice@example.org",
        display_name="Alice Liddell",
        groups=["QA", "devs", "ops"],
        teams=[("acme", "developers"), ("acme", "ops"), ("acme", "qa")],
    )


async def test_username_is_canonical_from_the_directory(directory: Directory) -> None:
    auth = directory.auth()
    for typed in ("ALICE", "Alice", "aliddell"):  # case-insensitive uid, and a second uid value
        identity = await auth.authenticate(typed, ALICE_PW)
        assert identity is not None and identity.username == "alice", typed
        assert identity.dn == directory.alice


@pytest.mark.parametrize(
    ("user", "group", "kind"),
    [
        ("carol", "carols", "member"),
        ("dave", "daves", "uniqueMember"),
        ("erin", "erins", "memberUid"),
    ],
)
async def test_groups_via_each_membership_attribute(
    directory: Directory, user: str, group: str, kind: str
) -> None:
    auth = directory.auth(group_team_map={group: f"org/{group}"})
    identity = await auth.authenticate(user, f"{user}-pw")
    assert identity is not None, kind
    assert identity.groups == [group]
    assert identity.teams == [("org", group)]


async def test_user_dn_is_escaped_in_the_group_filter(directory: Directory) -> None:
    identity = await directory.auth().authenticate("jsmith", "jsmith-pw")
    assert identity is not None
    assert identity.dn.lower().startswith("cn=smith")
    assert identity.groups == ["special"]


async def test_names_and_passwords_with_filter_characters_work_exactly(
    directory: Directory,
) -> None:
    auth = directory.auth()
    weird = await auth.authenticate("we*ird", "weird-pw")
    assert weird is not None and weird.username == "we*ird"
    corp = await auth.authenticate("corp\\svc", "corp-pw")
    assert corp is not None and corp.username == "corp\\svc"
    odd = await auth.authenticate("odd", ODD_PW)
    assert odd is not None and odd.username == "odd"
    # ... and the special characters are literal, never wildcards.
    assert await auth.authenticate("we*", "weird-pw") is None
    assert await auth.authenticate("*ird", "weird-pw") is None
    assert await auth.authenticate("corp*", "corp-pw") is None


async def test_no_group_lookup_without_group_base(directory: Directory) -> None:
    identity = await directory.auth(
        group_base_dn=None, group_team_map={"devs": "a/b"}
    ).authenticate("alice", ALICE_PW)
    assert identity is not None and identity.groups == [] and identity.teams == []


async def test_concurrent_logins(directory: Directory) -> None:
    auth = directory.auth(start_tls=True, ca_file=str(directory.slapd.ca_file))
    cases = [("alice", ALICE_PW, "alice"), ("bob", BOB_PW, "bob"), ("alice", BOB_PW, None)] * 8
    results = await asyncio.gather(*(auth.authenticate(u, p) for u, p, _ in cases))
    assert [r.username if r else None for r in results] == [want for _, _, want in cases]


# --- refusals ---------------------------------------------------------------------------------


async def test_wrong_password(directory: Directory) -> None:
    auth = directory.auth()
    assert await auth.authenticate("alice", "wrong") is None
    assert await auth.authenticate("alice", BOB_PW) is None  # another user's password
    assert await auth.authenticate("alice", ALICE_PW + " ") is None


async def test_unknown_user(directory: Directory) -> None:
    auth = directory.auth()
    assert await auth.authenticate("mallory", "whatever") is None
    assert await auth.authenticate("mallory", ALICE_PW) is None


async def test_empty_password_is_refused_before_any_bind(directory: Directory) -> None:
    ldap = directory.slapd
    # The trap is real on this server: a DN with an empty password binds (as anonymous).
    trap = whoami(ldap, directory.alice, "")
    assert trap.returncode == 0 and trap.stdout.strip() == "anonymous", trap
    assert await directory.auth().authenticate("alice", "") is None
    assert await directory.auth().authenticate("", ALICE_PW) is None
    # "before any bind": against a server that does not exist it is still a plain refusal.
    dead = directory.auth(url=f"ldap://127.0.0.1:{free_port()}", timeout=2)
    assert await dead.authenticate("alice", "") is None
    with pytest.raises(LDAPUnavailable):
        await dead.authenticate("alice", ALICE_PW)


INJECTIONS = [
    "*",
    ")(uid=*",
    "admin)(|(uid=*",
    "*)(uid=*",
    "admin)(uid=*))(|(uid=*",
    "alice)(uid=bob",
    "(uid=*)",
    "al*",
    "*lice",
    "a*e",
    "\\2a",
    "\\",
    "admin\x00",
    "alice\x00)(uid=*",
    "*)(|(objectClass=*",
    "admin)(!(uid=nobody",
]


@pytest.mark.parametrize("username", INJECTIONS)
async def test_filter_injection_never_authenticates(directory: Directory, username: str) -> None:
    auth = directory.auth()
    for password in (ALICE_PW, BOB_PW, ADMIN_PW):
        assert await auth.authenticate(username, password) is None
    # The filter the authenticator sends matches no entry at all (not "one of several").
    search_filter = render_filter(LDAPConfig().user_filter, username=username)
    assert search(directory.slapd, search_filter) == []


def test_the_unescaped_injections_would_have_matched(directory: Directory) -> None:
    # Control: the same strings pasted raw into the filter do reach other users' entries, so
    # the test above is testing something.
    assert directory.admin in search(directory.slapd, "(uid=*)")
    assert len(search(directory.slapd, "(|(uid=admin)(uid=*))")) > 2
    assert search(directory.slapd, "(uid=al*)") == [directory.alice]


async def test_ambiguous_user_is_refused(directory: Directory) -> None:
    assert len(search(directory.slapd, "(uid=dup)")) == 2
    assert await directory.auth().authenticate("dup", DUP_PW) is None
    # Under a base where it is unique, the same credentials are fine.
    narrowed = directory.auth(user_base_dn=directory.slapd.people_dn)
    identity = await narrowed.authenticate("dup", DUP_PW)
    assert identity is not None and identity.dn == "uid=dup," + directory.slapd.people_dn


async def test_user_filter_matching_many_is_refused(directory: Directory) -> None:
    # A configured filter that ignores the name matches everyone: never "the first one".
    auth = directory.auth(user_filter="(|(uid={username})(objectClass=inetOrgPerson))")
    assert await auth.authenticate("alice", ALICE_PW) is None


# --- directory unavailable --------------------------------------------------------------------


async def test_nothing_listening_is_unavailable(directory: Directory) -> None:
    auth = directory.auth(url=f"ldap://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(LDAPUnavailable):
        await auth.authenticate("alice", ALICE_PW)


async def test_stopped_server_is_unavailable(tmp_path: Path) -> None:
    ldap = Slapd(tmp_path / "ldap").start()
    try:
        ldap.add_user("alice", ALICE_PW)
        auth = LDAPAuthenticator(LDAPConfig(**ldap.config()))
        assert await auth.authenticate("alice", ALICE_PW) is not None
        assert ldap.stop() == 0
        with pytest.raises(LDAPUnavailable):
            await auth.authenticate("alice", ALICE_PW)
        with pytest.raises(LDAPUnavailable):
            await auth.authenticate("alice", "wrong")  # not "bad password"
    finally:
        ldap.cleanup()


async def test_silent_server_times_out_as_unavailable(directory: Directory) -> None:
    # Accepts TCP connections (the kernel does) but never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)
        auth = directory.auth(url=f"ldap://127.0.0.1:{sink.getsockname()[1]}", timeout=1)
        started = time.monotonic()
        with pytest.raises(LDAPUnavailable):
            await auth.authenticate("alice", ALICE_PW)
        assert time.monotonic() - started < 10


async def test_service_account_refused_is_unavailable(directory: Directory) -> None:
    auth = directory.auth(bind_password="not-the-service-password")
    with pytest.raises(LDAPUnavailable, match="service account"):
        await auth.authenticate("alice", ALICE_PW)


async def test_missing_search_base_is_unavailable(directory: Directory) -> None:
    with pytest.raises(LDAPUnavailable):
        await directory.auth(user_base_dn="ou=nowhere,dc=example,dc=org").authenticate(
            "alice", ALICE_PW
        )
    # A missing group base must not pass as "in no groups" (which would drop team memberships).
    with pytest.raises(LDAPUnavailable):
        await directory.auth(group_base_dn="ou=nowhere,dc=example,dc=org").authenticate(
            "alice", ALICE_PW
        )


# --- TLS --------------------------------------------------------------------------------------


def tls_connections(ldap: Slapd) -> int:
    return ldap.log().count("TLS established")


async def test_start_tls_with_ca_verification(directory: Directory) -> None:
    ldap = directory.slapd
    before = tls_connections(ldap)
    auth = directory.auth(url=ldap.url, start_tls=True, ca_file=str(ldap.ca_file))
    identity = await auth.authenticate("alice", ALICE_PW)
    assert identity is not None and identity.groups == ["QA", "devs", "ops"]
    assert await auth.authenticate("alice", "wrong") is None
    # Every connection was upgraded (service + user for each login), as the server saw it.
    wait_for(lambda: tls_connections(ldap) >= before + 4)
    assert tls_connections(ldap) >= before + 4


async def test_ldaps_with_ca_verification(directory: Directory) -> None:
    ldap = directory.slapd
    auth = directory.auth(url=ldap.ldaps_url, ca_file=str(ldap.ca_file))
    identity = await auth.authenticate("alice", ALICE_PW)
    assert identity is not None and identity.username == "alice"
    assert await auth.authenticate("alice", "wrong") is None


@pytest.mark.parametrize("mode", ["start_tls", "ldaps"])
async def test_wrong_ca_is_unavailable(directory: Directory, tmp_path: Path, mode: str) -> None:
    ldap = directory.slapd
    other_ca, _ = make_ca(tmp_path, "other-ca")
    url: dict[str, dict[str, Any]] = {
        "start_tls": {"url": ldap.url, "start_tls": True},
        "ldaps": {"url": ldap.ldaps_url},
    }
    auth = directory.auth(**url[mode], ca_file=str(other_ca))
    with pytest.raises(LDAPUnavailable, match="certificate verify failed"):
        await auth.authenticate("alice", ALICE_PW)
    # The system trust store does not know the test CA either.
    with pytest.raises(LDAPUnavailable):
        await directory.auth(**url[mode]).authenticate("alice", ALICE_PW)
    # verify_tls=false is the (documented, insecure) escape hatch.
    insecure = directory.auth(**url[mode], ca_file=str(other_ca), verify_tls=False)
    assert await insecure.authenticate("alice", ALICE_PW) is not None


@pytest.mark.parametrize("mode", ["start_tls", "ldaps"])
async def test_certificate_for_another_host_is_unavailable(tmp_path: Path, mode: str) -> None:
    # Right CA, but the certificate names another host than the URL's 127.0.0.1.
    with Slapd(tmp_path / "ldap", tls=True, tls_sans=["DNS:elsewhere.invalid"]) as ldap:
        ldap.add_user("alice", ALICE_PW)
        url: dict[str, dict[str, Any]] = {
            "start_tls": {"url": ldap.url, "start_tls": True},
            "ldaps": {"url": ldap.ldaps_url},
        }
        auth = LDAPAuthenticator(LDAPConfig(**ldap.config(**url[mode], ca_file=str(ldap.ca_file))))
        with pytest.raises(LDAPUnavailable, match="IP address mismatch"):
            await auth.authenticate("alice", ALICE_PW)
        # The chain itself is fine: only the name was wrong.
        insecure = LDAPAuthenticator(LDAPConfig(**ldap.config(**url[mode], verify_tls=False)))
        assert await insecure.authenticate("alice", ALICE_PW) is not None


async def test_start_tls_refused_by_server_never_falls_back_to_clear(tmp_path: Path) -> None:
    with Slapd(tmp_path / "ldap", tls=False) as ldap:  # no certificate: StartTLS fails
        ldap.add_user("alice", ALICE_PW)
        auth = LDAPAuthenticator(LDAPConfig(**ldap.config(start_tls=True)))
        with pytest.raises(LDAPUnavailable):
            await auth.authenticate("alice", ALICE_PW)
        assert 'BIND dn="uid=alice' not in ldap.log()


# --- configuration and escaping ---------------------------------------------------------------


def test_escape_filter_value() -> None:
    assert escape_filter_value("a*b(c)d\\e\x00f") == "a\\2ab\\28c\\29d\\5ce\\00f"
    assert escape_filter_value("Łukasz é") == "Łukasz é"
    assert render_filter("(uid={username})", username=")(uid=*") == "(uid=\\29\\28uid=\\2a)"
    # One pass: a value that looks like a placeholder is not substituted again.
    assert (
        render_filter(
            "(|(member={user_dn})(memberUid={username}))", username="{user_dn}", user_dn="x"
        )
        == "(|(member=x)(memberUid={user_dn}))"
    )


def test_config_defaults_and_descriptions() -> None:
    cfg = LDAPConfig()
    assert cfg.enabled is False
    assert cfg.user_filter == "(uid={username})"
    assert cfg.group_filter == "(|(member={user_dn})(uniqueMember={user_dn})(memberUid={username}))"
    assert cfg.group_name_attribute == "cn"
    assert cfg.verify_tls is True and cfg.start_tls is False
    for name, info in LDAPConfig.model_fields.items():
        assert info.description, name


def test_group_team_map_from_json_string() -> None:
    cfg = LDAPConfig.model_validate({"group_team_map": '{"devs": "acme/devs"}'})
    assert cfg.group_team_map == {"devs": "acme/devs"}


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_key": 1},
        {"url": "http://ldap.example.org"},
        {"url": "ldap://"},
        {"url": "ldap://host/dc=example?uid"},
        {"url": "ldaps://host", "start_tls": True},
        {"user_filter": "(uid=alice)"},
        {"user_filter": "(uid={user})"},
        {"user_filter": "uid={username}"},
        {"user_filter": "(uid={username}"},
        {"group_filter": "(cn=static)"},
        {"group_team_map": {"devs": "acme"}},
        {"group_team_map": {"devs": "Acme/Devs"}},
        {"group_team_map": {"devs": "acme/devs/x"}},
        {"group_team_map": "not json"},
        {"bind_dn": "cn=x,dc=y"},
        {"bind_password": "pw"},
        {"enabled": True, "user_base_dn": ""},
        {"timeout": 0},
    ],
)
def test_config_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LDAPConfig(**bad)


def test_missing_ca_file_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="ca_file"):
        LDAPAuthenticator(LDAPConfig(url="ldaps://127.0.0.1", ca_file="/nonexistent/ca.pem"))
