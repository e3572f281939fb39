"""The adapter client (moorage/scan/adapter.py) against a misbehaving adapter served on
loopback: answers that are not JSON, error bodies, odd Refresh-After values, redirects to
elsewhere, oversized bodies, an adapter that forgets a request, one that cannot be reached —
each an AdapterError with a message (transient where a retry may help), never a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moorage.scan import adapter as adapter_mod
from moorage.scan.adapter import AdapterClient, AdapterError, Pending

from ..conftest import free_port
from .adapter_app import AdapterServer

MODES: dict[str, Any] = {}


async def metadata(request: Request) -> Response:
    mode = MODES.get("metadata", "ok")
    if mode == "html":
        return Response("<html>proxy error</html>", media_type="text/html")
    if mode == "500":
        return Response(json.dumps({"error": {"message": "db \x1b[31mbroken"}}), 500)
    if mode == "503":
        return Response("busy", 503)
    if mode == "big":
        return Response(b"x" * 5000)
    return Response(json.dumps({"scanner": {"name": "H"}, "capabilities": []}))


async def scan(request: Request) -> Response:
    mode = MODES.get("scan", "ok")
    if mode == "no-id":
        return Response(json.dumps({"identifier": "x"}), 202)
    if mode == "long-id":
        return Response(json.dumps({"id": "x" * 300}), 202)
    if mode == "422":
        return Response(json.dumps({"error": {"message": "bad field"}}), 422)
    return Response(json.dumps({"id": "abc/../../x"}), 202)


async def report(request: Request) -> Response:
    mode = MODES.get("report", "ok")
    if mode == "pending-odd":
        return Response(status_code=302, headers={"Refresh-After": "nan"})
    if mode == "pending-huge":
        return Response(status_code=302, headers={"Refresh-After": "99999"})
    if mode == "pending-none":
        return Response(status_code=302, headers={"Location": "http://169.254.169.254/"})
    if mode == "404":
        return Response(status_code=404)
    if mode == "list":
        return Response("[1, 2]")
    return Response(json.dumps({"vulnerabilities": [], "path": request.scope["raw_path"].decode()}))


APP = Starlette(
    routes=[
        Route("/api/v1/metadata", metadata),
        Route("/api/v1/scan", scan, methods=["POST"]),
        Route("/api/v1/scan/{id:path}", report),
    ]
)


class _Holder:
    app = APP


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    srv = AdapterServer.__new__(AdapterServer)
    AdapterServer.__init__(srv, _Holder(), free_port())  # type: ignore[arg-type]
    with srv:
        yield srv.url


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _call(url: str, what: str, *args: Any) -> Any:
    async with AdapterClient(url, timeout=5) as client:
        return await getattr(client, what)(*args)


@pytest.mark.parametrize(
    ("mode", "message", "transient"),
    [
        ("html", "is not JSON", False),
        ("500", "answered /metadata with 500: db [31mbroken", False),
        ("503", "answered /metadata with 503", True),
    ],
)
def test_bad_metadata(hostile: str, mode: str, message: str, transient: bool) -> None:
    MODES["metadata"] = mode
    try:
        with pytest.raises(AdapterError) as err:
            run(_call(hostile, "metadata"))
        assert message in err.value.message and err.value.transient is transient
        assert "\x1b" not in err.value.message
    finally:
        MODES.clear()


def test_oversized_answers_are_cut_off(hostile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter_mod, "MAX_BODY", 1024)
    MODES["metadata"] = "big"
    try:
        with pytest.raises(AdapterError, match="too large"):
            run(_call(hostile, "metadata"))
    finally:
        MODES.clear()


@pytest.mark.parametrize(
    ("mode", "message"),
    [("no-id", "no usable 'id'"), ("long-id", "no usable 'id'"), ("422", "with 422: bad field")],
)
def test_bad_scan_answers(hostile: str, mode: str, message: str) -> None:
    MODES["scan"] = mode
    try:
        with pytest.raises(AdapterError, match=message.replace("'", ".")):
            run(
                _call(
                    hostile, "submit", "http://127.0.0.1:1", None, "a/b", "sha256:" + "0" * 64, "x"
                )
            )
    finally:
        MODES.clear()


def test_report_answers(hostile: str) -> None:
    # the request id goes into the path quoted: no path traversal on the adapter
    got = run(_call(hostile, "report", "abc/../../x"))
    assert got["path"] == "/api/v1/scan/abc%2F..%2F..%2Fx/report"
    for mode, expect in (("pending-odd", 2.0), ("pending-huge", 60.0), ("pending-none", 2.0)):
        MODES["report"] = mode
        got = run(_call(hostile, "report", "r1"))
        assert got == Pending(expect), mode  # a 302's Location is never followed
    MODES["report"] = "404"
    assert run(_call(hostile, "report", "r1")) is None
    MODES["report"] = "list"
    with pytest.raises(AdapterError, match="not a JSON object"):
        run(_call(hostile, "report", "r1"))
    MODES.clear()


def test_unreachable_adapter_is_transient() -> None:
    with pytest.raises(AdapterError) as err:
        run(_call(f"http://127.0.0.1:{free_port()}", "metadata"))
    assert err.value.transient and "cannot be reached" in err.value.message
