"""SBOM export of an image's inventory: SPDX 2.3 JSON and CycloneDX 1.5 JSON.

Both are built as plain dicts (the formats are small and stable; a library would add a
dependency for a few dozen lines) and checked in the tests against the published CycloneDX
1.5 JSON schema and the SPDX project's own validator. Deterministic for one inventory: ids
come from package URLs, the timestamp is the scan's.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from .. import __version__

TOOL = f"moorage-{__version__}"
SPDX_MEDIA_TYPE = "application/spdx+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
_SPDX_ID_BAD = re.compile(r"[^A-Za-z0-9.-]+")
_SPDX_LICENSE = re.compile(r"^[A-Za-z0-9.+-]+(?:\s+(?:AND|OR|WITH)\s+[A-Za-z0-9.+-]+)*$")


def _stamp(when: datetime | None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_name(repository: str, digest: str) -> str:
    return f"{repository}@{digest}"


def _packages(inventory: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in inventory.get("packages", []) if isinstance(p, dict)]


def spdx(
    inventory: dict[str, Any],
    repository: str,
    digest: str,
    when: datetime | None,
    base_url: str = "",
) -> dict[str, Any]:
    seen: dict[str, int] = {}

    def spdx_id(text: str) -> str:
        base = "SPDXRef-" + (_SPDX_ID_BAD.sub("-", text).strip("-") or "x")[:200]
        n = seen.get(base, 0)
        seen[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    image_id = "SPDXRef-image"
    hex_ = digest.partition(":")[2]
    image: dict[str, Any] = {
        "SPDXID": image_id,
        "name": repository,
        "versionInfo": digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{digest.replace(':', '%3A')}"
                f"?repository_url={repository}",
            }
        ],
    }
    if digest.startswith("sha256:"):
        image["checksums"] = [{"algorithm": "SHA256", "checksumValue": hex_}]
    packages = [image]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    os_info = inventory.get("os")
    if isinstance(os_info, dict):
        os_id = spdx_id(f"os-{os_info.get('id', '')}")
        packages.append(
            {
                "SPDXID": os_id,
                "name": str(os_info.get("id", "")),
                "versionInfo": str(os_info.get("version_id", "")),
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "primaryPackagePurpose": "OPERATING-SYSTEM",
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "description": str(os_info.get("name", "")),
            }
        )
        relationships.append(
            {"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": os_id}
        )
    for p in _packages(inventory):
        pid = spdx_id(f"{p['ecosystem']}-{p['name']}-{p['version']}")
        licenses = [x for x in p.get("licenses", []) if isinstance(x, str)]
        declared = licenses[0] if len(licenses) == 1 and _SPDX_LICENSE.match(licenses[0]) else None
        entry: dict[str, Any] = {
            "SPDXID": pid,
            "name": p["name"],
            "versionInfo": p["version"],
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "LIBRARY",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": f"found in {p.get('path', '')} (layer {p.get('layer_digest', '')})",
        }
        if declared is not None:
            entry["comment"] = f"declared licence: {declared}"
        elif licenses:
            entry["comment"] = "declared licence: " + "; ".join(licenses)
        if p.get("purl"):
            entry["externalRefs"] = [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": p["purl"],
                }
            ]
        packages.append(entry)
        relationships.append(
            {"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": pid}
        )
    namespace_base = (base_url.rstrip("/") or "https://moorage.invalid") + "/spdx/"
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": _image_name(repository, digest),
        "documentNamespace": f"{namespace_base}{repository}/{hex_ or digest}",
        "creationInfo": {"created": _stamp(when), "creators": [f"Tool: {TOOL}"]},
        "packages": packages,
        "relationships": relationships,
    }


_CDX_TYPES = {"golang": "library", "maven": "library"}


def cyclonedx(
    inventory: dict[str, Any], repository: str, digest: str, when: datetime | None
) -> dict[str, Any]:
    serial = uuid.UUID(
        bytes=hashlib.sha256(f"{repository}@{digest}".encode()).digest()[:16], version=5
    )
    image_ref = f"image:{digest}"
    components: list[dict[str, Any]] = []
    refs: set[str] = set()
    os_info = inventory.get("os")
    if isinstance(os_info, dict):
        components.append(
            {
                "type": "operating-system",
                "bom-ref": "os",
                "name": str(os_info.get("id", "")),
                "version": str(os_info.get("version_id", "")),
                "description": str(os_info.get("name", "")),
            }
        )
        refs.add("os")
    for p in _packages(inventory):
        ref = p.get("purl") or f"{p['ecosystem']}:{p['name']}@{p['version']}"
        n, base = 1, ref
        while ref in refs:
            n += 1
            ref = f"{base}#{n}"
        refs.add(ref)
        comp: dict[str, Any] = {
            "type": _CDX_TYPES.get(p["ecosystem"], "library"),
            "bom-ref": ref,
            "name": p["name"],
            "version": p["version"],
        }
        if p.get("purl"):
            comp["purl"] = p["purl"]
        licenses = [x for x in p.get("licenses", []) if isinstance(x, str) and x]
        if licenses:
            comp["licenses"] = [{"license": {"name": x}} for x in licenses]
        props = [
            {"name": "moorage:ecosystem", "value": p["ecosystem"]},
            {"name": "moorage:path", "value": str(p.get("path", ""))},
            {"name": "moorage:layer_digest", "value": str(p.get("layer_digest", ""))},
        ]
        if p.get("source_name"):
            props.append({"name": "moorage:source_name", "value": str(p["source_name"])})
            props.append(
                {"name": "moorage:source_version", "value": str(p.get("source_version") or "")}
            )
        comp["properties"] = props
        components.append(comp)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": _stamp(when),
            "tools": {
                "components": [{"type": "application", "name": "moorage", "version": __version__}]
            },
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": repository,
                "version": digest,
            },
        },
        "components": components,
        "dependencies": [{"ref": image_ref, "dependsOn": sorted(refs)}],
    }
