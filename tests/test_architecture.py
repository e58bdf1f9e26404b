"""The shape of the code, read from the source with ``ast`` (nothing is imported): no import cycle between
sealq's modules, the layering between its packages, and short functions.

Every import counts, also those inside functions (a lazy import is still a dependency). ``from sealq.x
import y`` imports module ``sealq.x.y`` when that is a module, else ``sealq.x``; a package's
``__init__`` is a module of its own (``sealq.convert``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1] / "sealq"
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(ROOT.parent)}:{self.line})"


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve_relative(module: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]  # a module's own package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _owning_module(name: str) -> str | None:
    """The sealq module ``name`` is, or the closest enclosing sealq module (``sealq.x.y.attr`` -> ``sealq.x.y``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> list[Edge]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.split(".")[0] == "sealq"]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else (node.module or "")
            if base.split(".")[0] != "sealq":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULES else base)
        for t in targets:
            owner = _owning_module(t)
            assert owner is not None, f"{path}:{node.lineno}: imports {t}, which is not a module of sealq"
            if owner != module:
                edges.append(Edge(module, owner, path, node.lineno))
    return edges


EDGES: list[Edge] = [e for m in MODULES for e in _imports(m)]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the strongly connected components of ``graph``."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    out.append(sorted(component))
    return out


def test_the_walk_finds_the_modules_and_their_imports():
    """Guards the test itself: the walk sees the package, lazy imports and package-relative names."""
    assert {"sealq.store", "sealq.vocab", "sealq.engine.step", "sealq.analysis.summary", "sealq.convert"} <= set(MODULES)
    edges = {(e.source, e.target) for e in EDGES}
    assert ("sealq.engine.step", "sealq.metrics") in edges
    assert ("sealq.convert", "sealq.convert.lora_gguf") in edges  # a package's __init__ is a module
    # a function-level import counts (sealq.engine.step imports the converter inside train_and_convert)
    assert ("sealq.engine.step", "sealq.convert") in edges


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in EDGES:
        graph[e.source].add(e.target)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle among " + ", ".join(component) + ":")
        lines += [f"    {e}" for e in EDGES if e.source in members and e.target in members]
    assert not cycles, "import cycles between sealq modules:\n" + "\n".join(lines)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# (the modules a rule is about, what they may not import, why)
FORBIDDEN = [
    ("sealq.analysis", ("sealq.engine", "sealq.models", "sealq.convert", "sealq.cli"),
     "analysis only reads runs.db"),
    ("sealq.models", ("sealq.convert", "sealq.engine", "sealq.analysis", "sealq.cli"),
     "the model runners know nothing of the loop"),
    ("sealq.convert", ("sealq.engine", "sealq.analysis", "sealq.cli"), "the converter knows nothing of the loop"),
    ("sealq.engine", ("sealq.cli",), "the engine is usable without the CLI"),
]


@pytest.mark.parametrize("package, forbidden, why", FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_layering(package, forbidden, why):
    bad = [e for e in EDGES if _in(e.source, package) and any(_in(e.target, f) for f in forbidden)]
    assert not bad, f"{package}.* must not import {', '.join(forbidden)} ({why}):\n" + "\n".join(f"    {e}" for e in bad)


def test_store_imports_only_errors_and_vocab():
    bad = [e for e in EDGES if e.source == "sealq.store" and e.target not in ("sealq.errors", "sealq.vocab")]
    assert not bad, "sealq.store may import only sealq.errors and sealq.vocab:\n" + "\n".join(f"    {e}" for e in bad)


@pytest.mark.parametrize("module", ["sealq.errors", "sealq.vocab", "sealq.metrics"])
def test_foundation_modules_import_no_other_sealq_module(module):
    """The names and grades every layer shares depend on nothing else of sealq."""
    bad = [e for e in EDGES if e.source == module]
    assert not bad, f"{module} must not import other sealq modules:\n" + "\n".join(f"    {e}" for e in bad)


def _is_migration(path: Path, name: str) -> bool:
    return path == ROOT / "store.py" and re.fullmatch(r"m0\d\d_\w+", name) is not None


def test_no_function_is_longer_than_60_lines():
    """Every function and method (nested ones too), from its ``def`` line to its last line, docstring
    included; schema migrations (``m0NN_*`` in sealq/store.py) are exempt."""
    long = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not _is_migration(path, node.name):
                    long.append(f"    {path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(sorted(long))
