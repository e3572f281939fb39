"""``moorage trust ...`` on a data directory (what an operator runs beside the servers): the
contract's spellings, the system default ``*``, refusals with a clear message and exit code 1,
and the audit record of each change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import PUBLIC_GOOD_ROOT, make_ca, new_key, public_pem


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trust-cli")
    r = run(d, "db", "upgrade")
    assert r.returncode == 0, r.stderr
    return d


def test_contract_commands_and_listing(data: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_bytes(public_pem(new_key("p384")))
    root = tmp_path / "root.pem"
    root.write_bytes(make_ca("CLI Root").pem)
    r = run(data, "trust", "add-key", "*", "release", "--public-key", str(key))
    assert r.returncode == 0 and "trusted key release in *" in r.stdout, r.stderr
    r = run(data, "trust", "add-notation-store", "acme", "corp", "--root-cert", str(root), str(root))
    assert r.returncode == 0 and "holds 1 certificate" in r.stdout, r.stderr
    r = run(data, "trust", "set-policy", "acme", "--require-signature", "on", "--signer", "release", "corp", "--all")
    assert r.returncode == 0 and "signed-only: all of release, corp" in r.stdout, r.stderr
    r = run(data, "trust", "set-policy", "acme/app", "--require-signature", "off")
    assert r.returncode == 0 and "signatures not required" in r.stdout, r.stderr
    r = run(data, "trust", "list")
    assert r.returncode == 0, r.stderr
    assert "[*] version 1" in r.stdout and "[acme] version 1" in r.stdout
    assert "key\trelease\tsha256:" in r.stdout and "notation-ca\tcorp\t1 certificate(s)" in r.stdout
    assert "policy\tacme\tsigned-only: all of release, corp" in r.stdout
    r = run(data, "trust", "remove-policy", "acme/app")
    assert r.returncode == 0, r.stderr
    r = run(data, "audit", "export", "--action", "trust.policy.set")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("trust.policy.set") == 2 and "cli:" in r.stdout


def test_refusals_say_what_is_wrong(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("hello")
    r = run(data, "trust", "add-key", "acme", "x", "--public-key", str(bad))
    assert r.returncode == 1 and "not a PEM public key" in r.stderr
    r = run(data, "trust", "add-key", "acme", "x", "--public-key", str(tmp_path / "missing.pub"))
    assert r.returncode != 0 and "cannot read public key" in r.stderr
    r = run(data, "trust", "set-policy", "acme", "--require-signature", "on", "--signer", "nobody")
    assert r.returncode == 1 and "nobody" in r.stderr
    r = run(data, "trust", "set-policy", "acme", "--require-signature", "maybe")
    assert r.returncode == 2
    r = run(data, "trust", "add-keyless", "ci", "gh", "--identity", "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main", "--issuer", "https://token.actions.githubusercontent.com")
    assert r.returncode == 1 and "trusted_root.json" in r.stderr
    r = run(data, "trust", "set-trusted-root", "ci", str(PUBLIC_GOOD_ROOT))
    assert r.returncode == 0, r.stderr
    r = run(data, "trust", "add-keyless", "ci", "gh", "--identity", "https://github.com/acme/.*", "--identity-regex", "--issuer", "https://token.actions.githubusercontent.com")
    assert r.returncode == 0, r.stderr
    broken = tmp_path / "root.json"
    broken.write_text(json.dumps({"mediaType": "nope"}))
    r = run(data, "trust", "set-trusted-root", "ci", str(broken))
    assert r.returncode == 1 and r.stderr.startswith("moorage: ")
    r = run(data, "trust", "remove-key", "ci", "nothing")
    assert r.returncode == 1 and "no trust entry nothing" in r.stderr
    r = run(data, "trust", "add-key", "Not/A/Namespace", "x", "--public-key", str(bad))
    assert r.returncode == 1
