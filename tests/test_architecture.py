"""The package's import graph: no circles (imports inside functions and under
TYPE_CHECKING count too), and arrows only run down the layers of
docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import needle_mm

PACKAGE = Path(needle_mm.__file__).resolve().parent

# Rooms from the top down: a module may import its own room and rooms below
# it, never one above. The vocabulary every layer shares (errors, config,
# filters, results, _version) sits at the bottom with the kernels' neighbours.
LAYERS = [
    {"__main__", "cli"},
    {"__init__"},
    {"importers", "ops", "remote", "integrations", "distributed"},
    {"database"},
    {"collection"},
    {"sparse", "_input", "config"},
    {"_engine"},
    {"_index"},
    {"_format", "_storage"},
    {"_kernels"},
    {"_text"},
    {"errors", "filters", "results", "_version", "_progress"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["needle_mm", *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every needle_mm module ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule; "from mod import name", the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t.startswith("needle_mm") and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {}
    for name, path in mods.items():
        # a package's __init__ importing its own submodules is how a room shows its face: not an arrow
        edges[name] = {t for t in imports_of(name, path, known) if not t.startswith(name + ".")}
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    r = room(module)
    for i, names in enumerate(LAYERS):
        if r in names:
            return i
    raise AssertionError(f"{module}: room {r!r} is in no layer of LAYERS (add it, and to ARCHITECTURE.md)")


def test_no_import_circles():
    edges = graph()
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert circles == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_arrows_run_down_the_layers():
    edges = graph()
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                    if room(a) != room(b) and layer(b) < layer(a))
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The checker itself: a lazy import is an arrow like any other."""
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from .b import x\n    import needle_mm.errors\n")
    found = imports_of("needle_mm.m", mod, {"needle_mm.m", "needle_mm.b", "needle_mm.errors"})
    assert found == {"needle_mm.b", "needle_mm.errors"}
