"""`moorage serve --no-auth` (issue 9): the UI and the management API are off in that mode, and
they say so — a page explaining why at / and /ui/..., a JSON error naming the mode on /api/v1 —
instead of a bare 404 "not found"; the start-up log carries the loud warning."""

from __future__ import annotations

import httpx

from tests.conftest import MoorageServer


def test_ui_and_api_explain_that_they_are_off(server: MoorageServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/v2/").status_code == 200
        for path in ("/", "/ui/repositories", "/ui/repositories/a/b", "/login"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert r.headers["content-type"].startswith("text/html")
            assert "--no-auth" in r.text and "/v2/" in r.text, path
            assert r.headers["content-security-policy"] == "default-src 'none'"
            assert r.headers["x-content-type-options"] == "nosniff"
        head = c.head("/")
        assert head.status_code == 200 and head.content == b""
        r = c.post("/login", data={"username": "a", "password": "b"})
        assert r.status_code == 501 and "--no-auth" in r.text
        for method, path in (
            ("GET", "/api/v1/repositories"),
            ("GET", "/api/v1"),
            ("PATCH", "/api/v1/repositories/a/b"),
        ):
            r = c.request(method, path)
            assert r.status_code == 501, (method, path, r.status_code)
            error = r.json()["error"]
            assert error["code"] == "DISABLED" and "--no-auth" in error["message"]
        # paths outside the UI and API stay unknown
        assert c.get("/nothing-here").status_code == 404
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")  # whole: the start is long past
    assert "AUTHENTICATION IS OFF" in log and "the web UI and /api/v1 are off" in log
