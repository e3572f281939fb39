"""Rewrite the key table of docs/configuration.md from moorage/config.py (run after adding a
key; tests/test_operation.py fails while a key is undocumented)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed

from moorage.config import config_keys, env_name  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"


def _default(info: Any) -> str:
    value = info.default
    if value is PydanticUndefined and info.default_factory is not None:
        value = info.default_factory()
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value}`"
    return f"`{value}`"


def table() -> str:
    rows = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for key, info in config_keys().items():
        desc = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{env_name(key)}` | {_default(info)} | {desc} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    text = DOC.read_text()
    new = re.sub(r"\| key \| environment \|.*?\n(?=\n)", table(), text, count=1, flags=re.S)
    DOC.write_text(new)


if __name__ == "__main__":
    main()
