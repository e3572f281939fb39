"""Executables: Go build info (the committed hello-go), cargo-auditable's ``.dep-v0`` section
added to a real ELF file by binutils' objcopy (as cargo-auditable's linker step adds it), and
the matcher-facing helpers (findings as JSON, their summary)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from moorage.scan.analyzers import analyze
from moorage.scan.service import finding_json, summarize

from .layers import DATA

AUDIT = {
    "packages": [
        {"name": "demo", "version": "0.1.0", "source": "local", "root": True, "dependencies": [1, 2]},
        {"name": "serde", "version": "1.0.197", "source": "crates.io"},
        {"name": "cc", "version": "1.0.90", "source": "crates.io", "kind": "build"},
        {"name": "smallvec", "version": "1.13.1", "source": "crates.io", "kind": "runtime"},
    ]
}  # fmt: skip


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="binutils' objcopy is needed")
def test_cargo_auditable_section(tmp_path: Path) -> None:
    section = tmp_path / "dep-v0"
    section.write_bytes(zlib.compress(json.dumps(AUDIT).encode()))
    exe = tmp_path / "demo"
    subprocess.run(
        ["objcopy", "--add-section", f".dep-v0={section}", str(DATA / "hello-go"), str(exe)],
        check=True,
    )
    record = analyze("usr/bin/demo", exe.read_bytes())
    assert record["errors"] == []
    cargo = [(p["name"], p["version"]) for p in record["packages"] if p["ecosystem"] == "cargo"]
    assert cargo == [("demo", "0.1.0"), ("serde", "1.0.197"), ("smallvec", "1.13.1")]
    # the Go build info of the same binary is still read
    assert ("stdlib", "1.27.3") in [(p["name"], p["version"]) for p in record["packages"]]


def test_non_go_elf_has_no_packages() -> None:
    record = analyze("usr/bin/sh", Path("/bin/sh").resolve().read_bytes())
    assert record == {"os": None, "packages": [], "errors": []}


@dataclasses.dataclass(frozen=True)
class Finding:  # the shape moorage/scan/findings.py gives a finding (the matcher's output)
    id: str
    aliases: tuple[str, ...]
    package: str
    version: str
    fixed_version: str | None
    severity: str
    cvss_score: float | None


def test_findings_as_json_and_summary() -> None:
    found = [
        finding_json(Finding("DSA-1", ("CVE-2024-1",), "glibc", "2.36-9", "2.36-9+deb12u4", "HIGH", 7.5)),
        finding_json(Finding("GHSA-x", (), "lodash", "4.17.20", None, "critical", 9.8)),
        finding_json({"id": "X", "severity": "whatever"}),
    ]  # fmt: skip
    assert found[0]["aliases"] == ["CVE-2024-1"] and found[1]["fixed_version"] is None
    assert summarize(found) == {"critical": 1, "high": 1, "medium": 0, "low": 0, "unknown": 1}
    with pytest.raises(TypeError):
        finding_json(42)
