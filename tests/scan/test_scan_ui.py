"""The scan pages of the web UI through a real server: an image built from a real dpkg status
entry (Debian 12's libc6 2.36-9+deb12u2, source glibc) matched against the Debian advisory
records of tests/data/vulndb; its findings page (status, counts, package rows, SBOM and export
links), the Vulnerabilities column of the repository page and section of the image page, the
CSV export of the API, "Scan now" (CSRF-checked, push rights), and visitors without read
access refused."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
import uuid

import httpx
import pytest

from ..conftest import MoorageServer, moorage_cli, put_manifest, sha256
from ..ui.conftest import csrf_from, login_http
from ..vulndb.conftest import RECORDS
from .conftest import wait_report
from .layers import layer
from .test_scan_api import push_image

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
# One entry of a Debian 12 /var/lib/dpkg/status, as dpkg wrote it (an unaffected zlib1g too).
DPKG_STATUS = b"""Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u2
Description: GNU C Library: Shared libraries

Package: zlib1g
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 168
Maintainer: Mark Brown <broonie@debian.org>
Architecture: amd64
Multi-Arch: same
Source: zlib
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime

"""
PASSWORD = "scan-ui-Pass-123"


@pytest.fixture(scope="module")
def imported(scan_server: MoorageServer) -> MoorageServer:
    r = moorage_cli(scan_server, "vulndb", "import", str(RECORDS / "debian"))
    assert r.returncode == 0, r.stderr
    return scan_server


def add_user(admin: httpx.Client, repo: str | None) -> str:
    user = f"u{uuid.uuid4().hex[:8]}"
    r = admin.post("/api/v1/users", json={"username": user, "password": PASSWORD})
    assert r.status_code == 201, r.text
    if repo is not None:
        r = admin.put(
            f"/api/v1/repositories/{repo}/-/permissions/users/{user}", json={"role": "read"}
        )
        assert r.status_code == 204, r.text
    return user


def rows(page: str) -> list[list[str]]:
    """The findings table's rows as cell texts (tags stripped)."""
    body = page.split('id="findings-table"', 1)[1].split("</table>", 1)[0]
    out = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1], re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        out.append(
            [html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c))).strip() for c in cells]
        )
    return out


def test_findings_page_column_panel_and_export(
    admin: httpx.Client, imported: MoorageServer
) -> None:
    repo = f"scanui{uuid.uuid4().hex[:8]}/debian"
    base = layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})
    digest = push_image(admin, repo, "12", [base])
    report = wait_report(admin, repo, "12", timeout=180)
    assert report["status"] == "done" and report["database_updated_at"], report
    ids = sorted(f["id"] for f in report["findings"])
    assert ids == ["DEBIAN-CVE-2023-4911", "DSA-5514-1"], report
    summary = report["summary"]
    assert sum(summary.values()) == 2 and summary["high"] >= 1, summary
    layer_digest = report["findings"][0]["layer_digest"]

    with login_http(imported) as ui:
        page = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/12")
        assert page.status_code == 200, page.text
        text = page.text
        assert 'id="scan-status">done<' in text
        for sev, n in summary.items():
            assert f'data-severity="{sev}">{n}<' in text
        assert 'data-severity="fixable">2<' in text
        got = sorted(rows(text))
        high = next(f for f in report["findings"] if f["id"] == "DEBIAN-CVE-2023-4911")
        assert [
            "DEBIAN-CVE-2023-4911",
            "libc6 Debian:12",
            "2.36-9+deb12u2",
            "2.36-9+deb12u3",
            "high",
            "7.8",
            layer_digest[:19],
        ] == [got[0][0].split(" ")[0], *got[0][1:6], got[0][6][:19]], got
        assert high["aliases"] == [] or all(a in got[0][0] for a in high["aliases"])
        assert got[1][0].startswith("DSA-5514-1") and got[1][1:4] == [
            "libc6 Debian:12",
            "2.36-9+deb12u2",
            "2.36-9+deb12u3",
        ], got
        export = f"/ui/repositories/{repo}/-/vulnerabilities/{digest}/export/"
        for what in ("spdx-json", "cyclonedx-json", "json", "csv"):
            assert f'href="{export}{what}"' in text, what
        # the downloads with the browser's session (the API would want credentials)
        spdx = ui.get(export + "spdx-json")
        assert spdx.status_code == 200 and spdx.headers["content-type"].startswith(
            "application/spdx+json"
        )
        assert spdx.json()["spdxVersion"] == "SPDX-2.3"
        names = {p["name"] for p in spdx.json()["packages"]}
        assert {"libc6", "zlib1g"} <= names, names
        cdx = ui.get(export + "cyclonedx-json")
        assert cdx.status_code == 200 and cdx.json()["bomFormat"] == "CycloneDX"
        assert "attachment" in cdx.headers["content-disposition"]
        assert ui.get(export + "json").json() == report
        api_csv = admin.get(
            f"/api/v1/repositories/{repo}/-/manifests/12/vulnerabilities", params={"format": "csv"}
        )
        assert ui.get(export + "csv").text == api_csv.text
        assert ui.get(export + "xml").status_code == 404
        assert 'id="scan-now"' in text  # the admin may push
        # the same page by digest
        by_digest = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/{digest}")
        assert by_digest.status_code == 200 and sorted(rows(by_digest.text)) == got

        # the repository page's column and the image page's section
        listing = ui.get(f"/ui/repositories/{repo}")
        assert listing.status_code == 200 and "<th>Vulnerabilities</th>" in listing.text
        worst = next(s for s in ("critical", "high", "medium", "low", "unknown") if summary[s])
        cell = f'href="/ui/repositories/{repo}/-/vulnerabilities/{digest}" class="badge danger"'
        assert cell in listing.text, listing.text
        assert re.search(rf">{summary[worst]} {worst}( \(\+\d\))?</a>", listing.text)
        image = ui.get(f"/ui/repositories/{repo}/manifests/{digest}")
        assert image.status_code == 200 and "<h2>Vulnerabilities</h2>" in image.text
        assert f'/ui/repositories/{repo}/-/vulnerabilities/{digest}">findings</a>' in image.text
    r = admin.get(
        f"/api/v1/repositories/{repo}/-/manifests/12/vulnerabilities", params={"format": "csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(t["id"] for t in table) == ids
    by_id = {t["id"]: t for t in table}
    assert (by_id["DEBIAN-CVE-2023-4911"]["package"], by_id["DEBIAN-CVE-2023-4911"]["version"]) == (
        "libc6",
        "2.36-9+deb12u2",
    )
    assert by_id["DEBIAN-CVE-2023-4911"]["fixed_version"] == "2.36-9+deb12u3"
    assert by_id["DEBIAN-CVE-2023-4911"]["severity"] == "high"
    assert by_id["DEBIAN-CVE-2023-4911"]["cvss_score"] == "7.8"
    assert by_id["DEBIAN-CVE-2023-4911"]["layer_digest"] == layer_digest
    r = admin.get(
        f"/api/v1/repositories/{repo}/-/manifests/12/vulnerabilities", params={"format": "xml"}
    )
    assert r.status_code == 400, r.text


def test_scan_now_queues_and_needs_push(admin: httpx.Client, imported: MoorageServer) -> None:
    repo = f"scanui{uuid.uuid4().hex[:8]}/now"
    base = layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})
    digest = push_image(admin, repo, "v1", [base])
    first = wait_report(admin, repo, "v1", timeout=180)["scanned_at"]

    with login_http(imported) as ui:
        page = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/v1")
        action = f"/ui/repositories/{repo}/-/vulnerabilities/v1/scan"
        # without the CSRF token nothing is queued
        assert ui.post(action, data={}).status_code == 403
        r = ui.post(action, data={"csrf_token": csrf_from(page.text)})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=scan-queued")
    # a new scan ran: the result's scanned_at moves on (polling; no timing asserted)
    deadline = time.monotonic() + 180
    while True:
        body = wait_report(admin, repo, digest, timeout=180)
        if body["scanned_at"] != first:
            break
        assert time.monotonic() < deadline, "the queued scan did not run"
        time.sleep(0.3)
    assert sorted(f["id"] for f in body["findings"]) == ["DEBIAN-CVE-2023-4911", "DSA-5514-1"]

    reader = add_user(admin, repo)
    with login_http(imported, reader, PASSWORD) as ui:
        page = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/v1")
        assert page.status_code == 200 and 'id="scan-status">done<' in page.text
        assert 'id="scan-now"' not in page.text
        r = ui.post(
            f"/ui/repositories/{repo}/-/vulnerabilities/v1/scan",
            data={"csrf_token": csrf_from(page.text)},
        )
        assert r.status_code == 403, r.text

    stranger = add_user(admin, None)
    with login_http(imported, stranger, PASSWORD) as ui:
        core = ui.get(f"/ui/repositories/{repo}").status_code  # as the core page answers
        assert core in (403, 404)
        for ref in ("v1", digest):
            r = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/{ref}")
            assert r.status_code == core, r.text
            assert "libc6" not in r.text
        home = ui.get("/ui/repositories")
        r = ui.post(
            f"/ui/repositories/{repo}/-/vulnerabilities/v1/scan",
            data={"csrf_token": csrf_from(home.text)},
        )
        assert r.status_code == core, r.text
        for what in ("csv", "json", "spdx-json"):
            r = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/v1/export/{what}")
            assert r.status_code == core and "libc6" not in r.text, what
    with httpx.Client(base_url=imported.url, timeout=30) as anon:
        r = anon.get(f"/ui/repositories/{repo}/-/vulnerabilities/v1")
        assert r.status_code in (303, 404), r.text
        assert "libc6" not in r.text
    # hostile references are "not found", never a 500
    with login_http(imported) as ui:
        for bad in ("-bad", "sha256:zz", "a" * 200):
            r = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/{bad}")
            assert r.status_code == 404, (bad, r.status_code)


def test_index_shows_its_children(admin: httpx.Client, imported: MoorageServer) -> None:
    """An index's column cell and findings page combine its children's results, each finding
    naming the platform manifest it came from."""
    repo = f"scanui{uuid.uuid4().hex[:8]}/multi"
    vulnerable = push_image(
        admin,
        repo,
        "amd64",
        [layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})],
    )
    clean = push_image(admin, repo, "arm64", [layer({"etc/os-release": OS_RELEASE})])
    sizes = {
        d: len(
            admin.get(
                f"/v2/{repo}/manifests/{d}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            ).content
        )
        for d in (vulnerable, clean)
    }
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": d,
                    "size": sizes[d],
                }
                for d in (vulnerable, clean)
            ],
        }
    ).encode()
    r = put_manifest(admin, repo, "multi", index, "application/vnd.oci.image.index.v1+json")
    assert r.status_code == 201, r.text
    body = wait_report(admin, repo, "multi", timeout=180)
    assert body["status"] == "done" and body["children"] == [vulnerable, clean], body
    wait_report(admin, repo, "arm64", timeout=180)
    index_digest = sha256(index)
    with login_http(imported) as ui:
        listing = ui.get(f"/ui/repositories/{repo}")
        assert listing.status_code == 200
        link = f'href="/ui/repositories/{repo}/-/vulnerabilities/'
        assert f'{link}{index_digest}" class="badge danger"' in listing.text
        assert f'{link}{vulnerable}" class="badge danger"' in listing.text
        assert f'{link}{clean}" class="badge ok"' in listing.text
        page = ui.get(f"/ui/repositories/{repo}/-/vulnerabilities/multi")
        assert page.status_code == 200 and "<th>Platform manifest</th>" in page.text
        got = rows(page.text)
        assert len(got) == 2 and all(r[-1] == vulnerable[:19] for r in got), got
        assert 'id="scan-downloads"' in page.text and "export/spdx-json" not in page.text
