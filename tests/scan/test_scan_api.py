"""Scanning through a real server: scan on push (a job; the push does not wait), the
vulnerabilities report without a matcher (no findings, database_updated_at null), SBOMs checked
against the CycloneDX 1.5 schema and the SPDX validator, the per-layer cache (a shared base is
read once), the per-organization override, artifacts, indexes, permissions and the CLI."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jsonschema
from referencing import Registry, Resource

from ..conftest import MoorageServer, moorage_cli, push_blob, put_manifest, sha256
from .conftest import wait_report
from .layers import DATA, layer, metadata, package_json

SCHEMAS = DATA / "schemas"
ZERO = {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}


def push_image(client: httpx.Client, repo: str, tag: str, layers: list[bytes]) -> str:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers"},
            "n": uuid.uuid4().hex,
        }
    ).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(client, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": push_blob(client, repo, blob),
                "size": len(blob),
            }
            for blob in layers
        ],
    }
    payload = json.dumps(doc).encode()
    r = put_manifest(client, repo, tag, payload)
    assert r.status_code == 201, r.text
    return sha256(payload)


BASE = layer(
    {
        "etc/os-release": b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
        "var/lib/dpkg/status": b"Package: libc6\nStatus: install ok installed\n"
        b"Architecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\n\n"
        b"Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\n"
        b"Source: zlib\nVersion: 1:1.2.13.dfsg-1\n",
    }
)


def app_layer(n: int) -> bytes:
    return layer(
        {
            f"srv/app{n}/node_modules/lodash/package.json": package_json("lodash", "4.17.20"),
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA": metadata(
                "six", "1.16.0", "MIT"
            ),
        }
    )


def test_scan_on_push_report_and_sboms(admin: httpx.Client, scan_server: MoorageServer) -> None:
    repo = f"scan{uuid.uuid4().hex[:8]}/app"
    digest = push_image(admin, repo, "v1", [BASE, app_layer(1)])
    body = wait_report(admin, repo, "v1")
    assert body == {
        "digest": digest,
        "status": "done",
        "scanned_at": body["scanned_at"],
        "database_updated_at": None,
        "summary": ZERO,
        "findings": [],
        "error": None,
        "children": None,
        "scanner": None,  # the built-in scanner
    }
    assert body["scanned_at"]
    # the same by digest
    assert wait_report(admin, repo, digest)["scanned_at"] == body["scanned_at"]

    r = admin.get(
        f"/api/v1/repositories/{repo}/-/manifests/v1/sbom", params={"format": "cyclonedx-json"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith(
        "application/vnd.cyclonedx+json"
    )
    cdx = r.json()
    registry: Registry = Registry()
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        registry = registry.with_resource(doc["$id"], Resource.from_contents(doc))
        registry = registry.with_resource(f.name, Resource.from_contents(doc))
    schema = json.loads((SCHEMAS / "bom-1.5.SNAPSHOT.schema.json").read_text())
    jsonschema.Draft7Validator(schema, registry=registry).validate(cdx)
    assert sorted((c["name"], c["version"], c.get("purl")) for c in cdx["components"]) == [
        ("debian", "12", None),
        ("libc6", "2.36-9+deb12u4", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"),
        ("lodash", "4.17.20", "pkg:npm/lodash@4.17.20"),
        ("six", "1.16.0", "pkg:pypi/six@1.16.0"),
        ("zlib1g", "1:1.2.13.dfsg-1", "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-12"),
    ]  # fmt: skip
    assert cdx["metadata"]["component"]["version"] == digest

    r = admin.get(
        f"/api/v1/repositories/{repo}/-/manifests/v1/sbom", params={"format": "spdx-json"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/spdx+json")
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = JsonLikeDictParser().parse(r.json())
    assert validate_full_spdx_document(document, "SPDX-2.3") == []
    names = sorted((p.name, p.version) for p in document.packages)
    assert names == [
        ("debian", "12"),
        ("libc6", "2.36-9+deb12u4"),
        ("lodash", "4.17.20"),
        (repo, digest),
        ("six", "1.16.0"),
        ("zlib1g", "1:1.2.13.dfsg-1"),
    ]
    r = admin.get(f"/api/v1/repositories/{repo}/-/manifests/v1/sbom", params={"format": "xml"})
    assert r.status_code == 400


def test_shared_base_layer_is_analysed_once(
    admin: httpx.Client, scan_server: MoorageServer
) -> None:
    org = f"base{uuid.uuid4().hex[:8]}"
    base = layer({"etc/alpine-release": b"3.14.2\n", "lib/apk/db/installed": (DATA / "apk-installed").read_bytes(), "n": uuid.uuid4().bytes})  # fmt: skip
    for n in range(4):
        push_image(admin, f"{org}/app{n}", "v1", [base, app_layer(100 + n)])
    reports = [wait_report(admin, f"{org}/app{n}", "v1") for n in range(4)]
    assert {r["status"] for r in reports} == {"done"}
    # This test's own scan jobs, told apart by repository (other tests' jobs, and any scan of
    # an attached SBOM, are not counted). A report reads "done" a moment before its job's own
    # outcome is recorded (the job finishes after the report is written): wait for all four.
    deadline = time.monotonic() + 60
    while True:
        r = admin.get("/api/v1/jobs", params={"kind": "scan.manifest", "limit": 100})
        assert r.status_code == 200, r.text
        mine = [
            j for j in r.json()["items"] if j["payload"].get("repository", "").startswith(f"{org}/")
        ]
        if all(j["state"] == "succeeded" for j in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # one scan per image; the base read once, each app layer once
    analyzed = sorted(j["result"]["layers_analyzed"] for j in mine if j["result"])
    assert analyzed == [1, 1, 1, 2], mine
    assert len(mine) == 4, mine


def test_organization_override_and_on_demand_scan(admin: httpx.Client) -> None:
    org = f"quiet{uuid.uuid4().hex[:8]}"
    r = admin.post("/api/v1/organizations", json={"name": org})
    assert r.status_code == 201, r.text
    r = admin.put(f"/api/v1/organizations/{org}/scanning", json={"on_push": False})
    assert r.json() == {"organization": org, "on_push": False, "effective": False}
    repo = f"{org}/app"
    digest = push_image(admin, repo, "v1", [BASE])
    r = admin.get(f"/api/v1/repositories/{repo}/-/manifests/v1/vulnerabilities")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = admin.post(f"/api/v1/repositories/{repo}/-/manifests/v1/scan")
    assert r.status_code == 202 and r.json() == {
        "repository": repo,
        "digest": digest,
        "status": "pending",
    }
    assert wait_report(admin, repo, "v1")["status"] == "done"
    r = admin.put(f"/api/v1/organizations/{org}/scanning", json={"on_push": None})
    assert r.json() == {"organization": org, "on_push": None, "effective": True}


def test_artifacts_are_unsupported_and_indexes_combine_children(admin: httpx.Client) -> None:
    repo = f"kinds{uuid.uuid4().hex[:8]}/app"
    one = push_image(admin, repo, "amd64", [BASE])
    two = push_image(admin, repo, "arm64", [BASE, app_layer(7)])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1}
                for d in (one, two)
            ],
        }
    ).encode()
    # sizes must be right for the registry to accept the index
    docs = {d: admin.get(f"/v2/{repo}/manifests/{d}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content for d in (one, two)}  # fmt: skip
    doc = json.loads(index)
    for m in doc["manifests"]:
        m["size"] = len(docs[m["digest"]])
    index = json.dumps(doc).encode()
    r = put_manifest(admin, repo, "multi", index, "application/vnd.oci.image.index.v1+json")
    assert r.status_code == 201, r.text
    body = wait_report(admin, repo, "multi")
    assert body["status"] == "done" and body["children"] == [one, two] and body["findings"] == []

    # an artifact (a Helm-chart-like config): scanned on demand, it is unsupported
    cfg = b"{}"
    art = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.thing",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": push_blob(admin, repo, cfg), "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": push_blob(admin, repo, b"hello"), "size": 5}],
        }
    ).encode()  # fmt: skip
    assert put_manifest(admin, repo, "thing", art).status_code == 201
    r = admin.get(f"/api/v1/repositories/{repo}/-/manifests/thing/vulnerabilities")
    assert r.status_code == 404  # not scanned on push
    assert admin.post(f"/api/v1/repositories/{repo}/-/manifests/thing/scan").status_code == 202
    assert wait_report(admin, repo, "thing")["status"] == "unsupported"


def test_permissions_and_bad_references(admin: httpx.Client, scan_server: MoorageServer) -> None:
    repo = f"perm{uuid.uuid4().hex[:8]}/app"
    push_image(admin, repo, "v1", [BASE])
    wait_report(admin, repo, "v1")
    with httpx.Client(base_url=scan_server.url, timeout=30) as anon:
        r = anon.get(f"/api/v1/repositories/{repo}/-/manifests/v1/vulnerabilities")
        assert r.status_code in (401, 403)
        assert anon.post(f"/api/v1/repositories/{repo}/-/manifests/v1/scan").status_code == 401
    r = admin.get(f"/api/v1/repositories/{repo}/-/manifests/-bad/vulnerabilities")
    assert r.status_code == 400
    r = admin.get(f"/api/v1/repositories/{repo}/-/manifests/missing/vulnerabilities")
    assert r.status_code == 404


def test_cli_scan_wait(admin: httpx.Client, scan_server: MoorageServer) -> None:
    repo = f"cli{uuid.uuid4().hex[:8]}/app"
    digest = push_image(admin, repo, "v1", [BASE, app_layer(3)])
    r = moorage_cli(scan_server, "scan", f"{repo}:v1", "--wait", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["digest"], doc["status"], doc["packages"], doc["findings"]) == (
        digest,
        "done",
        4,
        [],
    )
    r = moorage_cli(scan_server, "scan", f"{repo}@{digest}", "--wait")
    assert r.returncode == 0 and "status\tdone" in r.stdout
    r = moorage_cli(scan_server, "scan", f"{repo}@{digest}")
    assert r.returncode == 0 and "queued" in r.stdout
    r = moorage_cli(scan_server, "scan", f"{repo}:nope", "--wait")
    assert r.returncode == 1 and "no manifest" in r.stderr
    r = moorage_cli(scan_server, "scan", "NOT A REF")
    assert r.returncode == 1


def idle(server: MoorageServer) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = [
            moorage_cli(server, "jobs", "list", "--kind", "scan.manifest", "--state", state).stdout
            for state in ("queued", "running")
        ]
        if not any(b.strip() for b in busy):
            return
        time.sleep(0.5)
    raise AssertionError("scan jobs still running")


def test_sboms_attached_as_referrers(admin: httpx.Client, scan_server: MoorageServer) -> None:
    repo = f"refs{uuid.uuid4().hex[:8]}/app"
    digest = push_image(admin, repo, "v1", [BASE, app_layer(9)])
    assert wait_report(admin, repo, "v1")["status"] == "done"
    # attached after the result is stored: poll the referrers list (what `oras discover` reads)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        index = admin.get(f"/v2/{repo}/referrers/{digest}").json()
        if len(index["manifests"]) == 2:
            break
        time.sleep(0.2)
    kinds = sorted(m["artifactType"] for m in index["manifests"])
    assert kinds == ["application/spdx+json", "application/vnd.cyclonedx+json"]
    spdx_ref = next(m for m in index["manifests"] if m["artifactType"] == "application/spdx+json")
    manifest = admin.get(
        f"/v2/{repo}/manifests/{spdx_ref['digest']}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    assert manifest["subject"]["digest"] == digest
    doc = admin.get(f"/v2/{repo}/blobs/{manifest['layers'][0]['digest']}").json()
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert sorted(p["name"] for p in doc["packages"])[:3] == ["debian", "libc6", "lodash"]
    # a rescan adds no second pair
    assert admin.post(f"/api/v1/repositories/{repo}/-/manifests/v1/scan").status_code == 202
    assert wait_report(admin, repo, "v1")["status"] == "done"
    idle(scan_server)  # the job attaches after storing the result: wait for it to end
    assert len(admin.get(f"/v2/{repo}/referrers/{digest}").json()["manifests"]) == 2
