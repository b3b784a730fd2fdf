"""The fleet's modules import one another without a cycle (imports under TYPE_CHECKING and
inside functions count too), and outside the fleet only what it may depend on. import-linter
will say the same from pyproject.toml; this keeps it true until then, and says which modules."""

from __future__ import annotations

import ast
from pathlib import Path

import leeward.fleet

FLEET = Path(leeward.fleet.__file__).parent
ALLOWED = ("leeward.common", "leeward.fleet", "leeward.providers", "leeward_protocol")


def module_name(path: Path) -> str:
    parts = ["leeward", "fleet", *path.relative_to(FLEET).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every leeward module `path` imports, resolved to a module (not a name in one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: the fleet's imports are absolute"
            base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in modules else base)
    return {name for name in found if name.split(".")[0] in ("leeward", "leeward_protocol")}


def test_the_fleet_imports_no_cycle_and_only_what_it_may() -> None:
    paths = [p for p in FLEET.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}

    outside = {
        (importer, imported)
        for importer, names in graph.items()
        for imported in names
        if imported != "leeward" and not imported.startswith(ALLOWED)
    }
    assert not outside, f"the fleet may import only {ALLOWED}: {sorted(outside)}"

    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, set()) & modules):
            if state.get(imported) == "open":
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles in the fleet: " + "; ".join(" -> ".join(c) for c in cycles)
