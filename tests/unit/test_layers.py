"""The package's import graph: layers import only downward, and nothing imports in a circle.

Cases: every ``runbook_operator`` module's imports (top level, and inside functions;
``TYPE_CHECKING`` blocks too: a type is a dependency) go to its own layer or a lower
one, in the order api -> engine -> k8s, observability -> triggers, notify ->
controllers -> cli (``settings``, the operator process's configuration, sits with
controllers); and the
module graph has no cycle (each strongly connected component is one module); no
module is over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "runbook_operator"
LAYERS = {"api": 0, "settings": 4, "engine": 1, "k8s": 2, "observability": 2,
          "triggers": 3, "notify": 3, "controllers": 4, "cli": 5, "__init__": 0,
          "__main__": 5, "py": 0}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("runbook_operator", *parts))


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level
                                                      + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("runbook_operator."):
                    found.add(target)
        graph[name] = found
    return graph


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYERS[top]


def test_layers_import_only_downward() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in imports().items() for b in targets
                    if layer(b) > layer(a))
    assert upward == [], "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], cycles


def test_no_module_is_over_600_lines() -> None:
    """A module that long is doing several jobs (issue 21): split it by concern."""
    long = sorted(f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 600)
    assert long == [], long
