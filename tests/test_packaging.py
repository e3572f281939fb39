"""What `pip install .` (README's quick start: a wheel, not an editable install) ships: every file
the package reads at run time that is not Python must be matched by package-data, or an
installed node answers 500 for the pages of a capability whose templates were left out (the
trust, replication and scan templates once were)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moorage"


def test_package_data_covers_every_non_python_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["moorage"]
    shipped = {path for pattern in patterns for path in PACKAGE.glob(pattern) if path.is_file()}
    needed = {
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert needed - shipped == set()
