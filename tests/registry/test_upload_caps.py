"""Caps on open upload sessions per account and per repository (issue 11, "unbounded resources
per user"): beyond them POST answers 429 TOOMANYREQUESTS with Retry-After and leaves nothing
behind; finishing or cancelling a session frees a slot; /readyz counts the sessions."""

from __future__ import annotations

import os

import httpx

from tests.conftest import ADMIN_PASSWORD, admin_cli, error_code, own_auth_server, sha256


def _post(c: httpx.Client, repo: str) -> httpx.Response:
    return c.post(f"/v2/{repo}/blobs/uploads/")


def test_open_sessions_are_capped_per_user_and_per_repository() -> None:
    with own_auth_server(
        MOORAGE_REGISTRY_MAX_UPLOAD_SESSIONS_PER_USER="3",
        MOORAGE_REGISTRY_MAX_UPLOAD_SESSIONS_PER_REPOSITORY="2",
    ) as srv:
        admin_cli(srv, "create-user", "mallory", "--password-stdin", stdin="mallory-pass-123\n")
        admin_cli(srv, "create-user", "alice", "--password-stdin", stdin="alice-pass-123\n")
        mallory = httpx.Client(base_url=srv.url, auth=("mallory", "mallory-pass-123"), timeout=30)
        alice = httpx.Client(base_url=srv.url, auth=("alice", "alice-pass-123"), timeout=30)
        admin = httpx.Client(base_url=srv.url, auth=("admin", ADMIN_PASSWORD), timeout=30)
        with mallory, alice, admin:
            # Per repository: two open sessions in mallory/a, the third is refused.
            locs = [_post(mallory, "mallory/a").headers["Location"] for _ in range(2)]
            refused = _post(mallory, "mallory/a")
            assert refused.status_code == 429, refused.text
            assert error_code(refused) == "TOOMANYREQUESTS"
            assert (
                "repository mallory/a" in refused.text and int(refused.headers["Retry-After"]) > 0
            )
            # Per user: one more elsewhere makes three, the fourth is refused.
            assert _post(mallory, "mallory/b").status_code == 202
            refused = _post(mallory, "mallory/c")
            assert refused.status_code == 429 and "user user:mallory" in refused.text
            uploads = srv.data_dir / "storage" / "uploads"
            assert len(os.listdir(uploads)) == 3  # a refused start leaves no data behind
            # Monolithic pushes need no session and go on working.
            blob = os.urandom(1000)
            r = mallory.post(
                "/v2/mallory/c/blobs/uploads/", params={"digest": sha256(blob)}, content=blob
            )
            assert r.status_code == 201, r.text
            # Another user is not affected.
            assert _post(alice, "alice/a").status_code == 202

            ready = httpx.get(f"{srv.url}/readyz").json()["diagnostics"]["upload_sessions"]
            assert ready["open"] == 4
            assert ready["busiest_user"] == {"name": "user:mallory", "open": 3}
            assert ready["busiest_repository"] == {"name": "mallory/a", "open": 2}
            assert (ready["max_per_user"], ready["max_per_repository"]) == (3, 2)

            # Finishing one session and cancelling another free their slots.
            data = os.urandom(500)
            assert (
                mallory.put(locs[0], params={"digest": sha256(data)}, content=data).status_code
                == 201
            )
            assert mallory.delete(locs[1]).status_code == 204
            assert _post(mallory, "mallory/a").status_code == 202
            assert _post(mallory, "mallory/a").status_code == 202
            assert _post(mallory, "mallory/a").status_code == 429
