"""An image's inventory: each layer reduced to a cacheable record, then the records merged in
layer order into the final filesystem view.

A layer record (JSON, cached by layer digest in ``scan_layers``)::

    {"v": 1, "files": {path: file record (analyzers.analyze)}, "removed": [path, ...],
     "opaque": [dir, ...], "errors": [str, ...]}

Merging applies, layer by layer, the layer's opaque directories (everything below them from
lower layers goes), its removals (whiteouts, and paths it rewrote: a path and everything below
it goes), then its files. What is left is the final view's files of interest.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

from . import analyzers
from .model import Inventory, OSInfo, Package
from .walker import LayerReader, Limits

RECORD_VERSION = 1
LayerRecord = dict[str, Any]


async def analyze_layer(chunks: AsyncIterator[bytes], limits: Limits | None = None) -> LayerRecord:
    """Stream one layer blob through the walker and the analyzers. CPU-heavy steps run in a
    worker thread so the event loop keeps serving."""
    import asyncio

    reader = LayerReader(analyzers.want, limits, analyzers.analyze, relink)
    async for chunk in chunks:
        await asyncio.to_thread(reader.feed, chunk)
        if reader.failed or reader.tar.done:
            break
    return record_of(reader.finish())


def relink(record: dict[str, Any], target: str, path: str) -> dict[str, Any]:
    """A file record for a hard link at *path* to *target*: the same findings, at *path*."""
    out: dict[str, Any] = json.loads(json.dumps(record))
    for p in out.get("packages", ()):
        where = str(p.get("path", ""))
        if where == target or where.startswith(target + "!/"):
            p["path"] = path + where[len(target) :]
    return out


def record_of(files: Any) -> LayerRecord:
    """The cacheable record of a read layer (its files already analysed)."""
    return {
        "v": RECORD_VERSION,
        "files": dict(sorted(files.files.items())),
        "removed": files.removed,
        "opaque": files.opaque,
        "errors": files.errors,
    }


def _ancestors(path: str) -> Iterable[str]:
    """The directories above *path*, the image root ('') included."""
    yield ""
    at = path.find("/")
    while at >= 0:
        yield path[:at]
        at = path.find("/", at + 1)


def merge(layers: Iterable[tuple[str, LayerRecord]]) -> Inventory:
    view: dict[str, tuple[str, dict[str, Any]]] = {}  # path -> (layer digest, file record)
    digests: list[str] = []
    errors: list[str] = []
    for digest, record in layers:
        digests.append(digest)
        errors.extend(f"{digest[:19]}: {e}" for e in record.get("errors", ()))
        removed = set(record.get("removed", ()))
        opaque = set(record.get("opaque", ()))
        if removed or opaque:
            for path in list(view):
                if path in removed or any(a in removed or a in opaque for a in _ancestors(path)):
                    del view[path]
        for path, file_record in record.get("files", {}).items():
            view[path] = (digest, file_record)

    os_info = _os(view)
    packages: list[Package] = []
    for _path, (digest, file_record) in sorted(view.items()):
        errors.extend(file_record.get("errors", ()))
        for p in file_record.get("packages", ()):
            packages.append(_package(p, digest, os_info))
    packages.sort(key=lambda p: (p.ecosystem, p.name, p.version, p.path))
    return Inventory(os_info, tuple(packages), tuple(digests), tuple(errors))


def _os(view: dict[str, tuple[str, dict[str, Any]]]) -> OSInfo | None:
    for path in (
        "etc/os-release",
        "usr/lib/os-release",
        "etc/alpine-release",
        "etc/redhat-release",
        "etc/debian_version",
    ):
        entry = view.get(path)
        if entry is not None and entry[1].get("os"):
            o = entry[1]["os"]
            return OSInfo(
                id=o["id"],
                version_id=o.get("version_id", ""),
                name=o.get("name", ""),
                id_like=tuple(o.get("id_like", ())),
                version_codename=o.get("version_codename", ""),
            )
    return None


def _package(p: dict[str, Any], digest: str, os_info: OSInfo | None) -> Package:
    ecosystem, name, version = p["ecosystem"], p["name"], p["version"]
    extra = tuple((str(k), str(v)) for k, v in p.get("extra", ()))
    arch = p.get("arch", "")
    return Package(
        ecosystem=ecosystem,
        name=name,
        version=version,
        source_name=p.get("source_name"),
        source_version=p.get("source_version"),
        purl=purl(ecosystem, name, version, arch, os_info),
        layer_digest=digest,
        path=p.get("path", ""),
        licenses=tuple(p.get("licenses", ())),
        arch=arch,
        extra=extra,
    )


def _q(text: str) -> str:
    return quote(text, safe="")


def purl(ecosystem: str, name: str, version: str, arch: str, os_info: OSInfo | None) -> str:
    """A package URL (github.com/package-url/purl-spec) for the SBOM and for matching tools."""
    qualifiers: list[tuple[str, str]] = []
    namespace = ""
    if ecosystem in ("deb", "apk", "rpm"):
        namespace = os_info.id if os_info is not None else ""
        if arch:
            qualifiers.append(("arch", arch))
        if ecosystem == "rpm" and ":" in version:
            epoch, version = version.split(":", 1)
            qualifiers.append(("epoch", epoch))
        if os_info is not None and os_info.version_id:
            qualifiers.append(("distro", f"{os_info.id}-{os_info.version_id}"))
    elif ecosystem == "pypi":
        import re

        name = re.sub(r"[-_.]+", "-", name).lower()
    elif ecosystem == "npm" and name.startswith("@") and "/" in name:
        namespace, name = name.split("/", 1)
    elif ecosystem == "maven" and ":" in name:
        namespace, name = name.split(":", 1)
    elif ecosystem == "golang" and "/" in name:
        namespace, name = name.rsplit("/", 1)
    out = "pkg:" + ecosystem + "/"
    if namespace:
        out += "/".join(_q(part) for part in namespace.split("/")) + "/"
    out += _q(name)
    if version:
        out += "@" + _q(version)
    if qualifiers:
        out += "?" + "&".join(f"{k}={_q(v)}" for k, v in sorted(qualifiers))
    return out


def inventory_json(inv: Inventory) -> dict[str, Any]:
    return {
        "os": None
        if inv.os is None
        else {
            "id": inv.os.id,
            "version_id": inv.os.version_id,
            "name": inv.os.name,
            "id_like": list(inv.os.id_like),
            "version_codename": inv.os.version_codename,
        },
        "packages": [
            {
                "ecosystem": p.ecosystem,
                "name": p.name,
                "version": p.version,
                "source_name": p.source_name,
                "source_version": p.source_version,
                "purl": p.purl,
                "layer_digest": p.layer_digest,
                "path": p.path,
                "licenses": list(p.licenses),
                "arch": p.arch,
                "extra": [list(kv) for kv in p.extra],
            }
            for p in inv.packages
        ],
        "layers": list(inv.layers),
        "errors": list(inv.errors),
    }


def inventory_from_json(doc: dict[str, Any]) -> Inventory:
    o = doc.get("os")
    return Inventory(
        os=None
        if not o
        else OSInfo(
            o["id"], o["version_id"], o["name"], tuple(o["id_like"]), o["version_codename"]
        ),
        packages=tuple(
            Package(
                ecosystem=p["ecosystem"],
                name=p["name"],
                version=p["version"],
                source_name=p["source_name"],
                source_version=p["source_version"],
                purl=p["purl"],
                layer_digest=p["layer_digest"],
                path=p["path"],
                licenses=tuple(p["licenses"]),
                arch=p["arch"],
                extra=tuple((k, v) for k, v in p["extra"]),
            )
            for p in doc.get("packages", ())
        ),
        layers=tuple(doc.get("layers", ())),
        errors=tuple(doc.get("errors", ())),
    )
