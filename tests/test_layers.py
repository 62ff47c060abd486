"""The framework's shape, checked from its imports (../shared/DESIGN.md): layers only import downward, with no
cycle and no reach into another module's private names, and a domain imports the declaration API only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = [  # top to bottom; a component imports its own layer or the ones below
    {"cli"},
    {"contracts", "launch"},
    {"definitions"},
    {"factory", "derive", "verify", "diff", "domain"},
    {"monitor"},
    {"audit", "lineage"},
    {"quality", "warehouse", "sources", "spec", "rows"},
    {"sql", "settings", "locks", "background", "dagster_internals"},
]
LAYER = {component: depth for depth, components in enumerate(LAYERS) for component in components}


def _imports(folder: str) -> Iterator[tuple[Path, str, list[str]]]:
    """(file, module imported, names imported) for each import of a `pipelines` module under `folder`."""
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipelines":
                yield path, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                yield from ((path, a.name, []) for a in node.names if a.name.split(".")[0] == "pipelines")


def _component(module: str) -> str:
    return module.split(".")[1]


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path, module, names in _imports("pipelines"):
        source = path.relative_to(REPO / "pipelines").parts[0].removesuffix(".py")
        targets = [module] if module != "pipelines" else [f"pipelines.{name}" for name in names]
        edges.setdefault(source, set()).update(_component(t) for t in targets)
    return edges


def test_every_runtime_module_has_a_layer():
    components = {path.name.removesuffix(".py") for path in (REPO / "pipelines").iterdir()
                  if path.name != "__init__.py" and (path.suffix == ".py" or (path / "__init__.py").exists())}
    assert components == set(LAYER)


def test_no_arrow_points_up():
    upward = sorted((source, target) for source, targets in _edges().items() for target in targets
                    if LAYER[target] < LAYER[source])
    assert upward == []


def test_the_components_import_one_another_without_a_cycle():
    edges = {source: targets - {source} for source, targets in _edges().items()}
    done: set[str] = set()

    def visit(component: str, path: tuple[str, ...]) -> None:
        assert component not in path, " -> ".join((*path, component))
        if component not in done:
            for target in sorted(edges.get(component, ())):
                visit(target, (*path, component))
            done.add(component)

    for component in sorted(edges):
        visit(component, ())


def test_no_module_imports_another_modules_private_name():
    private = sorted((str(path.relative_to(REPO)), module, name) for path, module, names in _imports("pipelines")
                     for name in names if name.startswith("_"))
    assert private == []


def test_a_domain_imports_the_declaration_api_only():
    imported = {(str(path.relative_to(REPO)), module) for folder in ("assets", "checks")
                for path, module, _ in _imports(folder)}
    assert imported and {module for _, module in imported} == {"pipelines.domain"}
