"""What an image contains, as the inventory reports it and matching and SBOM export read it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OSInfo:
    """The image's operating system, from os-release (or the distribution's release file)."""

    id: str  # os-release ID: "debian", "alpine", "ubuntu", "rhel", "rocky", "almalinux", ...
    version_id: str  # os-release VERSION_ID: "12", "3.20.3", "22.04", "9.4", ...
    name: str = ""  # PRETTY_NAME, for display
    id_like: tuple[str, ...] = ()
    version_codename: str = ""


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package.

    ``ecosystem`` is the package's kind, not yet an OSV ecosystem string: "deb", "apk", "rpm",
    "pypi", "npm", "golang", "maven", "cargo" (purl types). Matching combines it with the image's
    OSInfo to pick the OSV ecosystem ("Debian:12", "Alpine:v3.20", "PyPI", ...). OS packages
    carry their source package (advisories for distributions name source packages).
    """

    ecosystem: str
    name: str
    version: str
    source_name: str | None = None
    source_version: str | None = None
    purl: str = ""
    layer_digest: str = ""  # the layer that added it (the last one that wrote its record)
    path: str = ""  # the file the record came from, inside the image
    licenses: tuple[str, ...] = ()
    arch: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())  # e.g. (("go_version", "go1.22.1"),)


@dataclass(frozen=True, slots=True)
class Inventory:
    """An image's final filesystem view reduced to what scanning needs."""

    os: OSInfo | None
    packages: tuple[Package, ...]
    layers: tuple[str, ...]  # layer digests, bottom first
    errors: tuple[
        str, ...
    ] = ()  # files that could not be read (malformed, too large): reported, not fatal
