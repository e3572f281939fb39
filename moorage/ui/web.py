"""Plumbing shared by every UI page: templates, static files, security headers, forms, CSRF."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

HERE = Path(__file__).parent

# Every UI response carries these (also redirects, errors and static files).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

MAX_FORM_BYTES = 64 * 1024
LOGIN_CSRF_COOKIE = "moorage_login_csrf"


class FormError(Exception):
    """A form that cannot be accepted (too large, wrong encoding)."""


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (last value wins).

    Parsed here rather than with python-multipart: the UI posts nothing else, and a size limit
    is enforced before the body is decoded.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise FormError("forms are posted as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("form too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("form is not UTF-8") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=200))
    except ValueError:  # more than 200 fields
        raise FormError("form has too many fields") from None


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class LoginCSRF:
    """Signed double-submit token for the login form (there is no session yet).

    The cookie and the hidden field carry the same ``nonce.mac``; the MAC (keyed by a secret
    every node shares) stops an attacker who can plant a cookie from choosing its value.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, b"login-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._mac(nonce)}"

    def valid(self, cookie: str | None, field: str | None) -> bool:
        if not tokens_equal(cookie, field):
            return False
        nonce, _, mac = str(cookie).partition(".")
        return bool(nonce) and hmac.compare_digest(mac, self._mac(nonce))


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


class StaticFiles:
    """The UI's few static files, read once; versioned URLs so browsers may cache for long."""

    TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

    def __init__(self, root: Path) -> None:
        self.files: dict[str, StaticFile] = {}
        for path in sorted(root.iterdir()):
            if path.suffix in self.TYPES:
                body = path.read_bytes()
                etag = hashlib.sha256(body).hexdigest()[:16]
                self.files[path.name] = StaticFile(body, self.TYPES[path.suffix], etag)

    def url(self, name: str) -> str:
        return f"/static/ui/{name}?v={self.files[name].etag}"

    def response(self, request: Request, name: str) -> Response:
        f = self.files.get(name)
        if f is None:
            return Response("not found", 404, media_type="text/plain")
        headers = {"ETag": f'"{f.etag}"', "Cache-Control": "public, max-age=86400"}
        if request.query_params.get("v") == f.etag:
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        if request.headers.get("if-none-match") == f'"{f.etag}"':
            return Response(status_code=304, headers=headers)
        return Response(f.body, media_type=f.media_type, headers=headers)


def human_size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``3 tags``, ``1 tag``."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def short_digest(digest: str | None) -> str:
    if not digest:
        return "—"
    alg, _, hexpart = digest.partition(":")
    return f"{alg}:{hexpart[:12]}" if hexpart else digest[:19]


def query(params: Mapping[str, Any], **changes: Any) -> str:
    """The current query string with some parameters changed (None drops one)."""
    merged = {k: v for k, v in params.items() if v not in (None, "")}
    for k, v in changes.items():
        if v in (None, ""):
            merged.pop(k, None)
        else:
            merged[k] = v
    return "?" + urlencode(merged) if merged else "?"


def make_templates(static: StaticFiles, extra_dirs: Sequence[Path] = ()) -> Environment:
    """Templates of ui/templates, then each capability's own directory (its pages extend
    ``base.html`` like the core's)."""
    env = Environment(
        loader=FileSystemLoader([HERE / "templates", *extra_dirs]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["when"] = when
    env.filters["short"] = short_digest
    env.filters["count"] = count
    env.globals["static"] = static.url
    env.globals["query"] = query
    return env


def html(env: Environment, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = env.get_template(template).render(**context)
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers={"Cache-Control": "no-store"})
