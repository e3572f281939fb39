"""Log injection (issue 11): control characters a client sends — an encoded CR/LF in the request
path, a tab in a header — never start a line of their own in the text log."""

from __future__ import annotations

import logging
import sys
import time
import uuid

import httpx

from moorage.logs import TextFormatter
from tests.conftest import MoorageServer

FORGED = "2026-12-06 04:02:30,000 WARNING moorage.auth [-] forged-{}"


def test_encoded_newlines_in_the_path_stay_on_one_line(auth_server: MoorageServer) -> None:
    marker = uuid.uuid4().hex[:8]
    forged = FORGED.format(marker)
    path = "/v2/x%0a" + forged.replace(" ", "%20") + "%0d%0a%1b%5b2J/manifests/latest"
    r = httpx.get(auth_server.url + path, headers={"User-Agent": f"ua\t{marker}"})
    assert r.status_code in (400, 401, 404)
    deadline = time.monotonic() + 10
    while f"forged-{marker}" not in auth_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = auth_server.log().splitlines()
    mine = [line for line in lines if f"forged-{marker}" in line]
    assert mine, auth_server.log()[-3000:]
    for line in mine:
        assert not line.startswith(forged), line  # no forged record
        assert "x\\n2026-12-06" in line and "\\r\\n\\x1b[2J" in line, line
    assert all("\x1b" not in line for line in lines if marker in line)
    assert any(f"ua\\t{marker}" in line for line in lines)


def test_messages_fields_and_tracebacks_are_escaped() -> None:
    fmt = TextFormatter()
    record = logging.LogRecord(
        "moorage.auth", logging.WARNING, __file__, 1, "bad name %s", ("a\nb\u2028c",), None
    )
    record.fields = {"path": "/x\r\ny"}
    record.request_id = "r\n1"
    line = fmt.format(record)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert "bad name a\\nb\\u2028c" in line and "path=/x\\r\\ny" in line and "[r\\n1]" in line
    try:
        raise ValueError("boom\n2026-12-06 04:02:30,000 ERROR forged")
    except ValueError:
        record = logging.LogRecord(
            "moorage", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = fmt.format(record)
    assert text.splitlines()[0].endswith("failed")
    assert all(line.startswith("    ") for line in text.splitlines()[1:]), text
    assert "\n    2026-12-06 04:02:30,000 ERROR forged" in text
