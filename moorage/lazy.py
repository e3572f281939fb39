"""Package exports resolved on first use (PEP 562), for packages whose public surface pulls in
heavy libraries (httpx, sigstore, cryptography) that most ``moorage`` processes never touch.

A package lists its exports once, by submodule, and keeps the same names in a
``TYPE_CHECKING`` block for type checkers and readers::

    __getattr__, __dir__ = lazy_exports(__name__, {".client": ("RegistryClient",), ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:  # what the module holds already, and what it would resolve
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
