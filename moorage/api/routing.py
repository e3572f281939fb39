"""The /api/v1 route table: one list of operations drives dispatch, validation and the OpenAPI
document, so the description cannot drift from what is served."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..auth.resolver import Resolved
from ..services.management import Caller

# "public": a read that anonymous callers may make too while auth.anonymous_access is on (the
# services then answer with public repositories only).
Auth = Literal["none", "public", "read", "write"]
MAX_BODY = 1 << 20


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Basic realm="moorage"'} if status == 401 else None
    return JSONResponse({"error": body}, status, headers=headers)


@dataclass
class Call:
    request: Request
    resolved: Resolved
    caller: Caller
    path: dict[str, str]
    query: Any = None
    body: Any = None

    @property
    def principal(self) -> Any:
        return self.resolved.principal


Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Op:
    method: str
    path: str  # OpenAPI form: /repositories/{repository}/-/tags
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "read"
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: Any = None  # a pydantic model class, or None (204)
    status: int = 200
    errors: tuple[int, ...] = (400, 401, 403, 404)
    media_type: str = "application/json"
    slash_params: frozenset[str] = frozenset({"repository"})  # may contain '/'
    description: str = ""
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        pattern = ""
        for part in re.split(r"(\{[a-z_]+\})", self.path):
            if part.startswith("{"):
                name = part[1:-1]
                pattern += (
                    f"(?P<{name}>(?:(?!/-(?:/|$)).)+)"  # '/-/' starts a sub-resource
                    if name in self.slash_params
                    else f"(?P<{name}>[^/]+)"
                )
            else:
                pattern += re.escape(part)
        self.regex = re.compile(f"^{pattern}$")

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{([a-z_]+)\}", self.path)


def check_text(value: Any, where: str, status: int = 400) -> None:
    """Strings the database can store: no NUL, no lone surrogates (hostile input)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise APIError(status, "INVALID", f"{where} must not contain NUL characters", where)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(status, "INVALID", f"{where} is not valid UTF-8 text", where) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, where, status)
            check_text(v, f"{where}.{k}" if where != "body" else str(k), status)
    elif isinstance(value, list):
        for v in value:
            check_text(v, where, status)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()) if not isinstance(x, int)) or "body"
    msg = str(err.get("msg", "invalid value"))
    return loc, f"{loc}: {msg}"


def parse_query(op: Op, request: Request) -> Any:
    if op.query is None:
        return None
    raw: dict[str, str] = {}
    for key in op.query.model_fields:
        values = request.query_params.getlist(key)
        if values:
            check_text(values[-1], key)
            raw[key] = values[-1]
    try:
        return op.query.model_validate(raw)
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        raise APIError(400, "INVALID", msg, loc) from None


async def parse_body(op: Op, request: Request) -> Any:
    if op.body is None:
        return None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise APIError(400, "INVALID", "send the body as application/json", "body")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise APIError(413, "TOO_LARGE", "request body is too large", "body")
    try:
        doc = json.loads(data)
    except RecursionError:  # "[[[[…" nested deeper than the parser's stack: not a 500
        raise APIError(400, "INVALID", "the body is nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "INVALID", "the body is not valid JSON", "body") from None
    if not isinstance(doc, dict):
        raise APIError(400, "INVALID", "the body must be a JSON object", "body")
    try:
        check_text(doc, "body", 422)
    except RecursionError:
        raise APIError(400, "INVALID", "the body is nested too deeply", "body") from None
    try:
        return op.body.model_validate(doc, strict=True)  # JSON types as declared: 0 is no bool
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        raise APIError(422, "INVALID", msg, loc) from None


def to_response(op: Op, result: Any, request: Request) -> Response:
    if isinstance(result, Response):
        return result
    if op.status == 204 or result is None:
        return Response(status_code=204)
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    # Answers may carry secrets shown once (robot secrets, tokens): never cached.
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    nxt = data.get("next_cursor") if isinstance(data, dict) else None
    if isinstance(nxt, str):
        url = request.url.include_query_params(cursor=nxt)
        headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return JSONResponse(data, op.status, headers=headers)
