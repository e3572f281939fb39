"""Route templates for metric labels: ``/v2/{name}/manifests/{reference}``, never the raw path.

A raw path as a label would make one time series per repository, tag and digest (and one per
path a scanner on the internet tries): unbounded memory in the server and in Prometheus. Every
path maps to one of a fixed set of templates; what matches none is ``other``.

``/v2`` is classified by its last two segments (a repository name may contain ``manifests`` or
``blobs`` as a component, but the protocol's own suffix always comes last), which costs well under
a microsecond. Routers with a route table (the REST API, the web UI) hand their templates in;
those paths are matched once and remembered in a bounded cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

OTHER = "other"
V2_PREFIX = "/v2/"

MANIFEST = "/v2/{name}/manifests/{reference}"
BLOB = "/v2/{name}/blobs/{digest}"
UPLOADS = "/v2/{name}/blobs/uploads/"
UPLOAD = "/v2/{name}/blobs/uploads/{uuid}"
TAGS = "/v2/{name}/tags/list"
REFERRERS = "/v2/{name}/referrers/{digest}"
V2_OTHER = "/v2/{other}"
UPLOAD_ROUTES = frozenset({UPLOADS, UPLOAD})

# Paths that are their own template.
EXACT = frozenset(
    {
        "/v2/",
        "/v2/_catalog",
        "/auth/token",
        "/auth/jwks.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/login",
        "/logout",
        "/ui",
        "/api/v1",
    }
)
# Families whose unknown paths keep their prefix (bounded: one template per family).
FAMILIES = (
    ("/api/v1/", "/api/v1/{other}"),
    ("/ui/", "/ui/{other}"),
    ("/static/ui/", "/static/ui/{name}"),
    ("/auth/", "/auth/{other}"),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The request method, or ``OTHER`` for anything outside the usual set (bounded)."""
    return method if method in METHODS else "OTHER"


def v2_template(path: str) -> str:
    """Template of a path under ``/v2/`` (the registry protocol)."""
    head, _, last = path.rpartition("/")
    rest, _, kind = head.rpartition("/")
    if not rest.startswith("/v2/"):
        # Fewer than three segments after /v2 (/v2/, /v2/_catalog, /v2/a/b): no protocol suffix.
        return path if path in EXACT else V2_OTHER
    if kind == "manifests":
        return MANIFEST
    if kind == "blobs":
        return UPLOADS if last == "uploads" else BLOB
    if kind == "uploads":
        if last == "":
            return UPLOADS if rest.endswith("/blobs") else V2_OTHER
        return UPLOAD if rest.endswith("/blobs") else V2_OTHER
    if kind == "tags" and last == "list":
        return TAGS
    if kind == "referrers":
        return REFERRERS
    return V2_OTHER


def compile_template(
    template: str, slash_params: Iterable[str] = ("repository", "name")
) -> re.Pattern[str]:
    """A regular expression for an OpenAPI- or Starlette-style template (``{param}``,
    ``{param:path}``); parameters named in *slash_params* may contain ``/``."""
    slash = set(slash_params)
    pattern = ""
    for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\})", template):
        if part.startswith("{"):
            name, _, conv = part[1:-1].partition(":")
            pattern += "(?:(?!/-(?:/|$)).)+" if name in slash or conv == "path" else "[^/]+"
        else:
            pattern += re.escape(part)
    return re.compile(f"^{pattern}$")


def label_of(template: str) -> str:
    """``/ui/repositories/{name:path}`` → ``/ui/repositories/{name}`` (converters are noise)."""
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*):[a-z]+\}", r"{\1}", template)


class RouteClassifier:
    """Maps a request path to its route template (a short, bounded set of strings).

    *routes* are (label, compiled regex) pairs matched in order for paths outside ``/v2``: give
    the REST API's operations as ``("/api/v1" + op.path, compile_template("/api/v1" + op.path))``
    and the web UI's Starlette routes with :meth:`from_templates`. Calling the classifier is
    what the middleware does on every request."""

    def __init__(
        self, routes: Iterable[tuple[str, re.Pattern[str]]] = (), cache_size: int = 4096
    ) -> None:
        self.routes = list(routes)
        self._lookup = lru_cache(maxsize=cache_size)(self._classify_other)

    @classmethod
    def from_templates(cls, templates: Iterable[str], cache_size: int = 4096) -> RouteClassifier:
        seen: dict[str, re.Pattern[str]] = {}
        for t in templates:
            seen.setdefault(label_of(t), compile_template(t))
        return cls(seen.items(), cache_size)

    def __call__(self, path: str) -> str:
        if path.startswith(V2_PREFIX):
            return v2_template(path)
        if path in EXACT:
            return path
        if path == "/v2":
            return "/v2/"
        return self._lookup(path)

    def _classify_other(self, path: str) -> str:
        if len(path) > 2048:
            return OTHER
        for label, regex in self.routes:
            if regex.match(path):
                return label
        for prefix, template in FAMILIES:
            if path.startswith(prefix):
                return template
        return OTHER
