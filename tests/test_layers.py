"""The layers of docs/architecture.md, checked on the source: no module imports the ASGI
application except the server entry point, the wiring (moorage/runtime.py) and everything below
the web layer import nothing of it, and module-level imports form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "moorage"
WEB = ("moorage.app", "moorage.api", "moorage.ui")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = current.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # "from . import x" names submodules; "from .x import y" names module x.
    return [f"{prefix}.{a.name}" for a in node.names] + [prefix]


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    body: list[ast.stmt] = list(tree.body) if module_level_only else list(ast.walk(tree))  # type: ignore[arg-type]
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(name, is_package, node))
    return {m for m in found if m.startswith("moorage")}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}


def test_only_the_server_entry_point_imports_the_asgi_app() -> None:
    offenders = {
        name
        for name, path in _modules().items()
        if "moorage.app" in _imports(path, module_level_only=False)
        and name not in ("moorage.app", "moorage.cli.serve")
    }
    assert not offenders, f"modules importing moorage.app: {sorted(offenders)}"


@pytest.mark.parametrize(
    "below",
    [
        "moorage.runtime",
        "moorage.services",
        "moorage.auth",
        "moorage.db",
        "moorage.storage",
        "moorage.oci",
        "moorage.jobs",
        "moorage.cli",
    ],
)
def test_the_layers_below_the_web_do_not_import_it(below: str) -> None:
    offenders = {
        (name, imp)
        for name, path in _modules().items()
        if name == below or name.startswith(below + ".")
        for imp in _imports(path, module_level_only=True)
        if any(imp == w or imp.startswith(w + ".") for w in WEB)
    }
    allowed = {("moorage.cli.serve", "moorage.app")}
    assert offenders <= allowed, sorted(offenders - allowed)


def test_no_import_cycles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imp in _imports(path, module_level_only=True):
            # an import of a.b.c names module a.b.c if it exists, else a.b (a name in it)
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                targets.add(imp)
        graph[name] = targets
    # A package's __init__ importing its own submodules is how packages are built, not a
    # cycle between areas: drop edges from a submodule to its own package's __init__.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"
