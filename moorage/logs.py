"""Structured logging: text or JSON lines, each carrying the request id of the request it is for."""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import time
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIds:
    """16 hex characters per request: 8 random ones per process, then a counter. Unique
    across processes and nodes for correlation (they are not secrets), without uuid4's
    urandom system call on every request."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFF:08x}"


new_request_id = _RequestIds().next


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: anything a terminal or
# a log shipper could take for the end of a line (or use to rewrite one).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def escape_controls(text: str) -> str:
    """*text* with every control character written as an escape (``\\n``, ``\\x1b``, ...):
    one log record stays one line whatever a client put in a path, header or name."""
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message k=v ...``, one line per record: the message,
    every field and the request id are escaped (issue 11, log injection); a traceback keeps
    its lines, each continuation indented so that none can pass for a record of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        record.request_id = escape_controls(str(getattr(record, "request_id", "-")))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        text = super().formatException(ei)
        return "\n".join("    " + escape_controls(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return "\n".join("    " + escape_controls(line) for line in stack_info.split("\n"))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict) and extra:
            line += " " + " ".join(
                f"{escape_controls(str(k))}={escape_controls(str(v))}" for k, v in extra.items()
            )
        return line


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
