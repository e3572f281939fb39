"""What each file of interest says: which paths are wanted (:func:`want`) and what a wanted
file holds (:func:`analyze`), as JSON-ready records that are cached per layer digest.

A file's record: ``{"os": {...} | None, "packages": [{...}], "errors": [str]}``; a package is
a dict of :class:`moorage.scan.model.Package` fields without ``layer_digest``/``purl`` (the
merge adds those, the purl needs the image's OS).
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import zipfile
from email.parser import HeaderParser
from typing import Any

from . import binaries, rpmdb

OS_FILES = {
    "etc/os-release",
    "usr/lib/os-release",
    "etc/debian_version",
    "etc/alpine-release",
    "etc/redhat-release",
}
DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_DB = "lib/apk/db/installed"
RPM_SQLITE = {"var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"}
RPM_NDB = {"var/lib/rpm/Packages.db", "usr/lib/sysimage/rpm/Packages.db"}
RPM_BDB = {"var/lib/rpm/Packages"}
JAR_SUFFIXES = (".jar", ".war", ".ear", ".jpi", ".hpi")
MAX_NESTING = 3
MAX_JAR_MEMBER = 64 << 20
MAX_JAR_INFLATE = 256 << 20  # bytes inflated from one top-level archive, nested ones included

Record = dict[str, Any]


def want(path: str, size: int, mode: int) -> str | None:
    """ "read" for files an analyzer reads by name, "elf" for executables (kept only when they
    turn out to be ELF), None for everything else."""
    if (
        path in OS_FILES
        or path == DPKG_STATUS
        or path == APK_DB
        or path in RPM_SQLITE
        or path in RPM_NDB
        or path in RPM_BDB
    ):
        return "read"
    if path.startswith(DPKG_STATUS_D) and "/" not in path[len(DPKG_STATUS_D) :]:
        name = path[len(DPKG_STATUS_D) :]
        return None if name.endswith(".md5sums") or not name else "read"
    base = posixpath.basename(path)
    parent = posixpath.basename(posixpath.dirname(path))
    if base == "METADATA" and parent.endswith(".dist-info"):
        return "read"
    if (base == "PKG-INFO" and parent.endswith(".egg-info")) or base.endswith(".egg-info"):
        return "read"
    if base == "package.json" and _npm_package_dir(path):
        return "read"
    if base.lower().endswith(JAR_SUFFIXES):
        return "read"
    if mode & 0o111 and size >= 64:
        return "elf"
    return None


def _npm_package_dir(path: str) -> bool:
    parts = path.split("/")
    if len(parts) >= 3 and parts[-3] == "node_modules":
        return True
    return len(parts) >= 4 and parts[-3].startswith("@") and parts[-4] == "node_modules"


def analyze(path: str, data: bytes) -> Record:
    record: Record = {"os": None, "packages": [], "errors": []}
    try:
        _analyze(path, data, record)
    except Exception as e:  # a malformed file is reported, never fatal
        record["errors"].append(f"{path}: {type(e).__name__}: {e}"[:500])
    return record


def _pkg(ecosystem: str, name: str, version: str, path: str, **kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"ecosystem": ecosystem, "name": name, "version": version, "path": path}
    for k, v in kw.items():
        if v not in (None, "", (), []):
            p[k] = list(v) if isinstance(v, tuple) else v
    return p


def _analyze(path: str, data: bytes, record: Record) -> None:
    pkgs: list[dict[str, Any]] = record["packages"]
    if path in OS_FILES:
        record["os"] = os_release(path, data.decode("utf-8", "replace"))
    elif path == DPKG_STATUS or path.startswith(DPKG_STATUS_D):
        pkgs.extend(dpkg(path, data.decode("utf-8", "replace"), path == DPKG_STATUS))
    elif path == APK_DB:
        pkgs.extend(apk(path, data.decode("utf-8", "replace")))
    elif path in RPM_SQLITE or path in RPM_NDB or path in RPM_BDB:
        blobs = (
            rpmdb.sqlite_blobs(data)
            if path in RPM_SQLITE
            else rpmdb.ndb_blobs(data)
            if path in RPM_NDB
            else rpmdb.bdb_blobs(data)
        )
        for blob in blobs:
            try:
                pkgs.append(rpm_package(path, rpmdb.parse_header(blob)))
            except rpmdb.RpmError as e:
                record["errors"].append(f"{path}: {e}")
    elif posixpath.basename(path) == "package.json":
        p = npm(path, data)
        if p is not None:
            pkgs.append(p)
    elif path.lower().endswith(JAR_SUFFIXES):
        pkgs.extend(jar(path, data, 0, record["errors"], [MAX_JAR_INFLATE]))
    elif path.endswith(("METADATA", "PKG-INFO", ".egg-info")):
        p = python(path, data.decode("utf-8", "replace"))
        if p is not None:
            pkgs.append(p)
    elif data.startswith(b"\x7fELF"):
        pkgs.extend(elf(path, data))


# --- OS ---------------------------------------------------------------------------------


def _kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key.strip()):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def os_release(path: str, text: str) -> dict[str, Any] | None:
    if path.endswith("os-release"):
        kv = _kv(text)
        if not kv.get("ID"):
            return None
        return {
            "id": kv["ID"],
            "version_id": kv.get("VERSION_ID", ""),
            "name": kv.get("PRETTY_NAME", kv.get("NAME", "")),
            "id_like": kv.get("ID_LIKE", "").split(),
            "version_codename": kv.get("VERSION_CODENAME", ""),
        }
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not first:
        return None
    if path == "etc/alpine-release":
        return {"id": "alpine", "version_id": first, "name": f"Alpine Linux v{first}"}
    if path == "etc/debian_version":
        return {"id": "debian", "version_id": first.split(".")[0], "name": f"Debian {first}"}
    m = re.search(r"release\s+([\d.]+)", first)
    lower = first.lower()
    os_id = (
        "rocky"
        if "rocky" in lower
        else "almalinux"
        if "alma" in lower
        else "centos"
        if "centos" in lower
        else "fedora"
        if "fedora" in lower
        else "rhel"
    )
    return {"id": os_id, "version_id": m.group(1) if m else "", "name": first}


# --- dpkg, apk, rpm -----------------------------------------------------------------------


def _paragraphs(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current, last = {}, ""
        elif line[0] in " \t":
            if last:
                current[last] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                current[last] = value.strip()
    if current:
        out.append(current)
    return out


def dpkg(path: str, text: str, has_status: bool) -> list[dict[str, Any]]:
    out = []
    for para in _paragraphs(text):
        name, version = para.get("Package", ""), para.get("Version", "")
        if not name or not version:
            continue
        if has_status and para.get("Status", "").split()[-1:] != ["installed"]:
            continue
        source_name, source_version = name, version
        source = para.get("Source", "")
        if source:
            m = re.fullmatch(r"(\S+)(?:\s+\((\S+)\))?", source)
            if m:
                source_name = m.group(1)
                source_version = m.group(2) or version
        out.append(
            _pkg(
                "deb",
                name,
                version,
                path,
                source_name=source_name,
                source_version=source_version,
                arch=para.get("Architecture", ""),
            )
        )
    return out


def apk(path: str, text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] in "PVAoL":
                fields.setdefault(line[0], line[2:])
        if not fields.get("P") or not fields.get("V"):
            continue
        out.append(
            _pkg(
                "apk",
                fields["P"],
                fields["V"],
                path,
                source_name=fields.get("o") or fields["P"],
                source_version=fields["V"],
                arch=fields.get("A", ""),
                licenses=(fields["L"],) if fields.get("L") else (),
            )
        )
    return out


def rpm_package(path: str, h: rpmdb.RpmHeader) -> dict[str, Any]:
    evr = (f"{h.epoch}:" if h.epoch else "") + h.version + (f"-{h.release}" if h.release else "")
    source_name, source_version = h.name, evr
    if h.sourcerpm.endswith(".src.rpm"):
        parts = h.sourcerpm[: -len(".src.rpm")].rsplit("-", 2)
        if len(parts) == 3:
            source_name = parts[0]
            source_version = (f"{h.epoch}:" if h.epoch else "") + f"{parts[1]}-{parts[2]}"
    return _pkg(
        "rpm",
        h.name,
        evr,
        path,
        source_name=source_name,
        source_version=source_version,
        arch=h.arch,
        licenses=(h.license,) if h.license else (),
    )


# --- language packages ----------------------------------------------------------------------


def python(path: str, text: str) -> dict[str, Any] | None:
    headers = HeaderParser().parsestr(text, headersonly=True)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    lic = headers.get("License-Expression") or headers.get("License") or ""
    lic = lic.strip() if lic and "\n" not in lic.strip() and len(lic) < 100 else ""
    return _pkg(
        "pypi", str(name).strip(), str(version).strip(), path, licenses=(lic,) if lic else ()
    )


def npm(path: str, data: bytes) -> dict[str, Any] | None:
    doc = json.loads(data)
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    lic = doc.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    return _pkg("npm", name, version, path, licenses=(lic,) if isinstance(lic, str) and lic else ())


def jar(
    path: str, data: bytes, depth: int, errors: list[str], budget: list[int]
) -> list[dict[str, Any]]:
    """Maven coordinates from a jar and the jars inside it. *budget* (shared by the nested
    calls) bounds the bytes inflated: a zip bomb ends in an error."""
    out: list[dict[str, Any]] = []
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as e:
        errors.append(f"{path}: not a zip archive ({e})")
        return out
    with z:
        for info in z.infolist()[:100_000]:
            name = info.filename
            if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                if info.file_size > 1 << 20:
                    errors.append(f"{path}!/{name}: too large")
                    continue
                props = _properties(_read_member(z, info, budget).decode("utf-8", "replace"))
                g, a, v = props.get("groupId"), props.get("artifactId"), props.get("version")
                if g and a and v:
                    out.append(_pkg("maven", f"{g}:{a}", v, f"{path}!/{name}"))
            elif name.lower().endswith(JAR_SUFFIXES):
                if depth + 1 > MAX_NESTING:
                    errors.append(f"{path}!/{name}: nested deeper than {MAX_NESTING}")
                elif info.file_size > MAX_JAR_MEMBER:
                    errors.append(f"{path}!/{name}: {info.file_size} bytes, over the limit")
                elif info.file_size > budget[0]:
                    errors.append(f"{path}!/{name}: over the inflate budget of {MAX_JAR_INFLATE}")
                    return out
                else:
                    inner = _read_member(z, info, budget)
                    out.extend(jar(f"{path}!/{name}", inner, depth + 1, errors, budget))
    return out


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """A member, read no further than its declared size (a lying header cannot inflate it),
    charged to *budget*."""
    budget[0] -= info.file_size
    with z.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise ValueError(f"{info.filename}: larger than declared")
    return data


def _properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def elf(path: str, data: bytes) -> list[dict[str, Any]]:
    sections = binaries.elf_sections(data, {".go.buildinfo", ".dep-v0"})
    out: list[dict[str, Any]] = []
    if ".go.buildinfo" in sections:
        info = binaries.go_buildinfo(sections[".go.buildinfo"])
        gov = info.go_version
        extra = [["go_version", gov]]
        out.append(_pkg("golang", "stdlib", gov.removeprefix("go"), path, extra=extra))
        if info.main is not None and info.main[1] not in ("", "(devel)"):
            out.append(_pkg("golang", info.main[0], info.main[1], path, extra=extra))
        elif info.main is not None:
            out.append(_pkg("golang", info.main[0], "(devel)", path, extra=extra))
        for dep, version, replaced in info.deps:
            dep_extra = extra + ([["replaced_by", replaced]] if replaced else [])
            out.append(_pkg("golang", dep, version, path, extra=dep_extra))
    if ".dep-v0" in sections:
        for p in binaries.cargo_auditable(sections[".dep-v0"]):
            crate, crate_version = p.get("name"), p.get("version")
            if (
                isinstance(crate, str)
                and isinstance(crate_version, str)
                and p.get("kind") != "build"
            ):
                source = [["source", str(p.get("source", ""))]]
                out.append(_pkg("cargo", crate, crate_version, path, extra=source))
    return out
