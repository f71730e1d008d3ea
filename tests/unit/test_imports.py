"""Imports run one way (docs/ARCHITECTURE.md): no module imports another that imports it back,
no two packages of aapo import each other, and nothing under aapo.training imports
aapo.evaluation. Read from the source with `ast` (lazy imports inside functions count too)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "aapo").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the aapo modules it imports (`from pkg import sub` counts as `pkg.sub`)."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_one_that_imports_it_back():
    assert _cycles(_edges(_modules())) == []


def test_no_two_packages_import_each_other():
    packages: dict[str, set[str]] = {}
    for module, targets in _edges(_modules()).items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a != b and b != "aapo":
                packages.setdefault(a, set()).add(b)
    assert _cycles(packages) == []


def test_training_never_imports_evaluation():
    wrong = [
        (module, target)
        for module, targets in _edges(_modules()).items()
        for target in targets
        if module.startswith("aapo.training") and target.startswith("aapo.evaluation")
    ]
    assert wrong == []


def test_the_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
