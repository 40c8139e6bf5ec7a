"""The package's layout: no import circles, and the core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pubsubsse"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports when it runs (module level or deferred), not for typing."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            found |= {c for c in candidates if c and c.startswith("pubsubsse")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pubsubsse")}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def test_no_import_circles_in_the_package():
    graph = {module_name(p): runtime_imports(p) for p in PACKAGE.rglob("*.py")}
    # A package's __init__ re-exports its modules; importing a module imports its package first,
    # which is not a circle of the code's own making.
    for name, imports in graph.items():
        graph[name] = {m for m in imports if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_core_does_no_io_and_takes_no_lock():
    source = "\n".join(path.read_text() for path in sorted((PACKAGE / "core").glob("*.py")))
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
    }
    assert not imported & {"socket", "threading", "select", "selectors", "os", "queue", "redis", "psycopg", "gevent"}
    assert "Lock(" not in source and "open(" not in source


def test_the_protocol_does_no_io_and_knows_no_framework():
    tree = ast.parse((PACKAGE / "web" / "_protocol.py").read_text())
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
    }
    io = {"socket", "threading", "select", "selectors", "os", "signal", "gevent", "io"}
    frameworks = {"flask", "werkzeug", "django"}
    assert not imported & (io | frameworks), imported & (io | frameworks)
