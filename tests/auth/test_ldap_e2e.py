"""LDAP through the running server: a real slapd (tests/auth/slapd.py) and ``moorage serve``.

Directory users are not created in Moorage beforehand: their first login creates them, and every
login mirrors their directory groups into the teams of ``auth.ldap.group_team_map``. Roles are
granted to those teams with the admin command line, as an operator would. Checked on SQLite and
PostgreSQL: token issue and push for a group member, refusal for a non-member, losing access when
removed from the group, wrong password (401) versus directory down (503), and one push with the
real skopeo client and LDAP credentials.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.auth.slapd import Slapd, missing_tools
from tests.auth.test_access import admin_cli
from tests.clients.harness import Skopeo, make_client_env
from tests.clients.ocigen import make_image, write_layout
from tests.conftest import (
    ADMIN_PASSWORD,
    MoorageServer,
    image_manifest,
    postgres_database,
    put_manifest,
)

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))

ORG = "acme"
REPO = f"{ORG}/app"
LDAP_PASSWORD = "ldap-Pa55word!"


@dataclass
class LdapRegistry:
    """A Moorage server authenticating against its own slapd."""

    server: MoorageServer
    ldap: Slapd
    tmp: Path

    def add_user(self, prefix: str, groups: tuple[str, ...] = ()) -> tuple[str, str]:
        """A directory user (uid unique to this run) in *groups*; returns (uid, DN)."""
        uid = f"{prefix}{uuid.uuid4().hex[:8]}"
        dn = self.ldap.add_user(uid, LDAP_PASSWORD, mail=f"{uid}@example.org")
        for group in groups:
            self.add_member(group, dn)
        return uid, dn

    def add_member(self, group: str, dn: str) -> None:
        self.ldap.ldapmodify(
            f"dn: cn={group},{self.ldap.groups_dn}\nchangetype: modify\n"
            f"add: member\nmember: {dn}\n-\n"
        )

    def remove_member(self, group: str, dn: str) -> None:
        self.ldap.ldapmodify(
            f"dn: cn={group},{self.ldap.groups_dn}\nchangetype: modify\n"
            f"delete: member\nmember: {dn}\n-\n"
        )


@contextlib.contextmanager
def ldap_registry(
    backend: tuple[str, str | None], env: dict[str, str] | None = None
) -> Iterator[LdapRegistry]:
    """slapd with groups ``devs`` (→ acme/devs, created and granted write on acme before any
    login) and ``ops`` (→ acme/ops, left for the first login to create), and a server using it."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moorage-ldap-e2e-")))
        ldap = stack.enter_context(Slapd(workdir=tmp / "slapd"))
        # groupOfNames needs a member: the service entry keeps each group valid when emptied.
        ldap.add_group("devs", [ldap.service_dn])
        ldap.add_group("ops", [ldap.service_dn])
        ldap.add_group("others", [ldap.service_dn])
        config: dict[str, Any] = {
            "auth": {
                "ldap": {
                    **ldap.config(),
                    "enabled": True,
                    "group_team_map": {"devs": f"{ORG}/devs", "ops": f"{ORG}/ops"},
                }
            }
        }
        config_file = tmp / "moorage.yaml"
        config_file.write_text(yaml.safe_dump(config))
        own_url = stack.enter_context(
            postgres_database() if backend[1] else contextlib.nullcontext(None)
        )
        server = MoorageServer(
            tmp / "data",
            database_url=own_url,
            extra_args=["--config", str(config_file)],
            env={"MOORAGE_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})},
        ).start()
        stack.callback(server.stop)
        admin_cli(server, "create-org", ORG)
        admin_cli(server, "create-team", ORG, "devs")
        admin_cli(server, "grant", "write", ORG, "--team", f"{ORG}/devs")
        yield LdapRegistry(server, ldap, tmp)


@pytest.fixture(scope="module")
def reg(backend: tuple[str, str | None]) -> Iterator[LdapRegistry]:
    with ldap_registry(backend) as r:
        yield r


# --- helpers -------------------------------------------------------------------------------


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def get_token(
    server: MoorageServer, username: str, password: str, repo: str = REPO
) -> httpx.Response:
    return httpx.get(
        f"{server.url}/auth/token",
        params={"service": "moorage", "scope": f"repository:{repo}:pull,push"},
        headers=basic(username, password),
        timeout=60,
    )


def granted(token: str, repo: str = REPO) -> set[str]:
    """The actions a token grants on *repo* (read from its claims, not trusted for anything)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    actions: set[str] = set()
    for entry in claims.get("access", []):
        if entry["type"] == "repository" and entry["name"] == repo:
            actions |= set(entry["actions"])
    return actions


def login(server: MoorageServer, username: str, password: str = LDAP_PASSWORD) -> str:
    r = get_token(server, username, password)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    return str(r.json()["token"])


def can_start_upload(server: MoorageServer, headers: dict[str, str], repo: str = REPO) -> int:
    r = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", headers=headers, timeout=60)
    return r.status_code


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


# --- the tests -----------------------------------------------------------------------------


def test_group_member_gets_token_and_pushes(reg: LdapRegistry) -> None:
    uid, _ = reg.add_user("alice", groups=("devs",))
    token = login(reg.server, uid)
    assert granted(token) == {"pull", "push"}
    with httpx.Client(base_url=reg.server.url, headers=bearer(token), timeout=60) as c:
        manifest = image_manifest(c, REPO)
        r = put_manifest(c, REPO, uid, manifest)
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{REPO}/manifests/{uid}").content == manifest
    # Basic credentials directly on /v2 go through the same directory login.
    assert can_start_upload(reg.server, basic(uid, LDAP_PASSWORD)) == 202


def test_user_outside_the_group_is_denied(reg: LdapRegistry) -> None:
    uid, _ = reg.add_user("bob", groups=("others",))
    token = login(reg.server, uid)  # a valid login: the token just grants nothing on acme/app
    assert granted(token) == set()
    for headers in (bearer(token), basic(uid, LDAP_PASSWORD)):
        r = httpx.post(f"{reg.server.url}/v2/{REPO}/blobs/uploads/", headers=headers, timeout=60)
        assert r.status_code == 403, r.text
        assert error_code(r) == "DENIED"
    # His own namespace is his, as for any user.
    assert can_start_upload(reg.server, basic(uid, LDAP_PASSWORD), f"{uid}/own") == 202


def test_removed_from_group_loses_access_precreated_team(reg: LdapRegistry) -> None:
    uid, dn = reg.add_user("dave", groups=("devs",))
    if granted(login(reg.server, uid)) != {"pull", "push"}:
        pytest.fail("precondition: a member of devs must be granted push")
    reg.remove_member("devs", dn)
    assert granted(login(reg.server, uid)) == set()
    assert can_start_upload(reg.server, basic(uid, LDAP_PASSWORD)) == 403


def test_removed_from_group_loses_access_synced_team(reg: LdapRegistry) -> None:
    """The same, for a mapped team the first login created (source 'ldap')."""
    uid, dn = reg.add_user("erin", groups=("ops",))
    assert granted(login(reg.server, uid)) == set()  # team acme/ops made now, with no role yet
    admin_cli(reg.server, "grant", "write", ORG, "--team", f"{ORG}/ops")
    assert granted(login(reg.server, uid)) == {"pull", "push"}
    assert can_start_upload(reg.server, basic(uid, LDAP_PASSWORD)) == 202
    reg.remove_member("ops", dn)
    assert granted(login(reg.server, uid)) == set()
    assert can_start_upload(reg.server, basic(uid, LDAP_PASSWORD)) == 403
    # And back in the group, back in the team.
    reg.add_member("ops", dn)
    assert granted(login(reg.server, uid)) == {"pull", "push"}


def test_wrong_ldap_password_is_401(reg: LdapRegistry) -> None:
    uid, _ = reg.add_user("frank", groups=("devs",))
    login(reg.server, uid)  # known to Moorage from now on
    wrong = get_token(reg.server, uid, "not-" + LDAP_PASSWORD)
    assert wrong.status_code == 401, wrong.text
    assert error_code(wrong) == "UNAUTHORIZED"
    # Not distinguishable from a name the directory does not know.
    unknown = get_token(reg.server, f"nobody{uuid.uuid4().hex[:8]}", "not-" + LDAP_PASSWORD)
    assert (unknown.status_code, unknown.content) == (wrong.status_code, wrong.content)
    r = httpx.get(f"{reg.server.url}/v2/", headers=basic(uid, "not-" + LDAP_PASSWORD), timeout=60)
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    # The right password still works (one failure is far below the lockout).
    assert granted(login(reg.server, uid)) == {"pull", "push"}


def test_directory_down_is_503_not_401(backend: tuple[str, str | None]) -> None:
    # A server of its own (its slapd is stopped here); a low account limit shows that the
    # outage is not counted as failed logins.
    with ldap_registry(backend, env={"MOORAGE_AUTH_LOCKOUT_ACCOUNT_LIMIT": "2"}) as r:
        uid, _ = r.add_user("gina", groups=("devs",))
        token = login(r.server, uid)
        r.ldap.stop()
        for attempt in range(3):
            resp = get_token(r.server, uid, LDAP_PASSWORD)
            assert resp.status_code == 503, f"attempt {attempt + 1}: {resp.text}"
            assert error_code(resp) == "UNAVAILABLE"
        resp = get_token(r.server, f"nobody{uuid.uuid4().hex[:8]}", LDAP_PASSWORD)
        assert resp.status_code == 503 and error_code(resp) == "UNAVAILABLE"
        resp = httpx.get(f"{r.server.url}/v2/", headers=basic(uid, LDAP_PASSWORD), timeout=60)
        assert resp.status_code == 503 and error_code(resp) == "UNAVAILABLE", resp.text
        # Local accounts do not depend on the directory; a token issued before still works.
        assert get_token(r.server, "admin", ADMIN_PASSWORD).status_code == 200
        assert can_start_upload(r.server, bearer(token)) == 202


def test_skopeo_push_with_ldap_credentials(reg: LdapRegistry, tmp_path: Path) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed")
    uid, _ = reg.add_user("henry", groups=("devs",))
    image = make_image()
    layout = write_layout(tmp_path / "layout", {"1": image})
    target = f"{reg.server.host}/{REPO}:{uid}"
    run = Skopeo(skopeo, make_client_env(tmp_path / "clients", reg.server.host))
    proc = run(
        "copy", "--preserve-digests", "--dest-tls-verify=false",
        "--dest-creds", f"{uid}:{LDAP_PASSWORD}",
        f"oci:{layout}:1", f"docker://{target}",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{proc.stdout.decode()}\n{proc.stderr.decode()}\n{reg.server.log()[-3000:]}"
    )
    # What skopeo pushed is there, byte for byte.
    with httpx.Client(base_url=reg.server.url, auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
        r = admin.get(
            f"/v2/{REPO}/manifests/{uid}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 200, r.text
        assert r.content == image.manifest.data
        assert r.headers["Docker-Content-Digest"] == image.manifest.digest
        for layer in image.layers:
            assert admin.get(f"/v2/{REPO}/blobs/{layer.digest}").content == layer.data
    # And the same credentials are refused for a user outside the group.
    outsider, _ = reg.add_user("ivan", groups=("others",))
    proc = run(
        "copy", "--preserve-digests", "--dest-tls-verify=false",
        "--dest-creds", f"{outsider}:{LDAP_PASSWORD}",
        f"oci:{layout}:1", f"docker://{reg.server.host}/{REPO}:{outsider}",
        check=False,
    )  # fmt: skip
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert "403" in stderr or "denied" in stderr.lower(), stderr
