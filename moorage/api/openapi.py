"""The OpenAPI 3.1 document of /api/v1, generated from the route table and its pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..auth.admin import USERNAME_RE
from .routing import Op
from .schemas import ErrorBody

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Malformed request (unreadable JSON, bad query or path parameter)",
    401: "Authentication required or failed",
    403: "Authenticated but not allowed (or a missing CSRF token with a session cookie)",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with existing state",
    413: "Request body too large",
    429: "Too many failed logins from this account or address; retry later",
    422: "A field of the body is invalid (`field` names it)",
}
_NAME = {"type": "string", "pattern": USERNAME_RE.pattern, "minLength": 2, "maxLength": 64}
_DIGEST = "sha256:[a-f0-9]{64}"
_TAG = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
PATH_PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    "repository": {
        "type": "string",
        # Simplified (the full OCI grammar is checked by the server): keeps generators fast.
        "pattern": "^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$",
        "maxLength": 255,
    },
    "reference": {"type": "string", "pattern": f"^(?:{_TAG}|{_DIGEST})$"},
    "digest": {"type": "string", "pattern": f"^{_DIGEST}$"},
    "tag": {"type": "string", "pattern": f"^{_TAG}$"},
    "token_id": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "file": {"type": "string", "enum": []},
    "organization": _NAME,
    "team": _NAME,
    "username": _NAME,
    "namespace": _NAME,
    "robot": _NAME,
}
PATH_PARAM_TEXT = {
    "repository": "Repository name, e.g. `acme/app` (slashes allowed, or encoded as %2F)",
    "reference": "A tag or a digest",
    "digest": "A digest, e.g. `sha256:<64 hex>`",
    "tag": "A tag",
    "token_id": "A token's id",
}


def build_openapi(
    ops: list[Op], prefix: str, version: str, static_files: list[str]
) -> dict[str, Any]:
    PATH_PARAM_SCHEMA["file"] = {"type": "string", "enum": sorted(static_files)}
    models: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization")]
    for op in ops:
        if isinstance(op.response, type) and issubclass(op.response, BaseModel):
            models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    mapping, defs = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(mapping[(model, mode)])  # type: ignore[index]

    paths: dict[str, Any] = {}
    seen: dict[str, Op] = {}
    for op in ops:
        operation_id = f"{op.method.lower()}_{op.handler.__name__}"
        if (other := seen.setdefault(operation_id, op)) is not op:
            # Generated clients name their methods after it: two routes cannot share one.
            raise ValueError(
                f"operationId {operation_id!r} of {op.method} {op.path} is already used by "
                f"{other.method} {other.path}: give one of the handlers another name"
            )
        item: dict[str, Any] = {
            "operationId": operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": [],
            "responses": {},
        }
        if op.description:
            item["description"] = op.description
        for name in op.path_params:
            schema = dict(PATH_PARAM_SCHEMA.get(name, {"type": "string", "minLength": 1}))
            param = {"name": name, "in": "path", "required": True, "schema": schema}
            if name in PATH_PARAM_TEXT:
                param["description"] = PATH_PARAM_TEXT[name]
            item["parameters"].append(param)
        if op.query is not None:
            qschema = op.query.model_json_schema(ref_template=REF)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                prop = dict(prop)
                desc = prop.pop("description", None)
                prop.pop("title", None)
                param = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if desc:
                    param["description"] = desc
                item["parameters"].append(param)
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        if op.status == 204:
            item["responses"]["204"] = {"description": "Done"}
        elif isinstance(op.response, type) and issubclass(op.response, BaseModel):
            item["responses"][str(op.status)] = {
                "description": "OK" if op.status == 200 else "Created",
                "content": {"application/json": {"schema": ref(op.response, "serialization")}},
            }
        elif op.media_type == "application/json":
            item["responses"]["200"] = {
                "description": "OK",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        else:
            types = (
                ["application/x-ndjson", "text/csv"]
                if op.path.startswith("/audit/export")
                else op.media_type.split("|")
            )
            media: dict[str, Any] = {t: {"schema": {"type": "string"}} for t in types}
            item["responses"]["200"] = {"description": "OK", "content": media}
        errors = set(op.errors)
        if op.auth != "none":
            errors |= {400, 401, 403, 429}
        if op.query is not None or op.path_params:
            errors.add(400)
        if op.body is not None:
            errors |= {400, 413, 422}
        for code in sorted(errors):
            item["responses"][str(code)] = {
                "description": ERROR_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": ref(ErrorBody, "serialization")}},
            }
        if op.auth != "none":
            item["security"] = [{"basic": []}, {"bearer": []}, {"session": []}]
            if op.auth == "public":  # anonymous too, when anonymous access is on
                item["security"].append({})
        else:
            item["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Moorage management API",
            "version": version,
            "description": (
                "Repositories, images, organizations, teams, users, robots, tokens and the "
                "audit log. Lists are paginated with `limit` and `cursor` (`next_cursor` in "
                'the body, `Link: rel=next`); errors are `{"error": {"code", "message", '
                '"field"}}`. A session cookie needs the `X-CSRF-Token` header on changes.'
            ),
        },
        "servers": [{"url": prefix}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "User password, robot secret, or a personal access token "
                    "as the password.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A personal access token (moorage_pat_...) or a token from "
                    "/auth/token.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "moorage_session",
                    "description": "The web UI's session; changes also need X-CSRF-Token.",
                },
            },
        },
    }
