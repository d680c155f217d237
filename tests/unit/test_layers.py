"""The dependency direction of docs/architecture.md, checked on the source.

Only module-level imports count (an import inside a function or under
``TYPE_CHECKING`` runs later or never); a module depends on the modules its
``import`` / ``from ... import`` statements name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "keel").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in MODULES}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


# (layer, packages it must not import at module level)
RULES = [
    (
        "keel.core",
        [
            "keel.store",
            "keel.worker",
            "keel.client",
            "keel.workflow",
            "keel.cli",
            "keel.testing",
            "keel.replay",
            "keel.schedules",
            "keel.observe",
        ],
    ),
    (
        "keel.store",
        ["keel.worker", "keel.client", "keel.workflow", "keel.cli", "keel.replay", "keel.observe"],
    ),
    ("keel.workflow", ["keel.worker", "keel.client", "keel.cli", "keel.store", "keel.replay"]),
    ("keel.graph", ["keel.worker", "keel.client", "keel.cli", "keel.store", "keel.replay"]),
    ("keel.client", ["keel.worker", "keel.cli", "keel.testing"]),
    ("keel.operations", ["keel.worker", "keel.client", "keel.cli", "keel.testing", "keel.replay"]),
    ("keel.worker", ["keel.cli", "keel.testing", "keel.replay"]),
    ("keel.replay", ["keel.cli", "keel.testing"]),
    # Observability sits beside the store: the worker and the client call its
    # hooks, the CLI and the dashboard serve its endpoints.
    (
        "keel.observe",
        [
            "keel.worker",
            "keel.client",
            "keel.workflow",
            "keel.cli",
            "keel.testing",
            "keel.replay",
            "keel.schedules",
        ],
    ),
    # The dashboard reads through the client and the store and folds journals
    # with core; it never drives a worker, and runs no replay.
    ("keel.ui", ["keel.worker", "keel.cli", "keel.testing", "keel.replay", "keel.workflow"]),
]


def test_nothing_imports_the_dashboard() -> None:
    """keel.ui is an optional extra (starlette, jinja2): only keel.ui itself and
    the ``keel ui`` command, inside its function, may import it."""
    wrong = sorted(
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if not _in(module, "keel.ui")
        for dep in deps
        if _in(dep, "keel.ui")
    )
    assert wrong == []


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_dependencies_point_inward(layer: str, forbidden: list[str]) -> None:
    wrong = sorted(
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if _in(module, layer)
        for dep in deps
        if any(_in(dep, package) for package in forbidden)
    )
    assert wrong == []


def test_cli_uses_the_production_replay_checker() -> None:
    wrong = sorted(
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if _in(module, "keel.cli")
        for dep in deps
        if _in(dep, "keel.testing")
    )
    assert wrong == []
