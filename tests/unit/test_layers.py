"""The package's layering, read from the source: imports only go down, and every module stays small.

The layers, bottom first, are on the docs' architecture page. A module may import its own layer
and the ones below; ``core/`` imports nothing but the leaves, not even for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pubsubsse"

#: Bottom first: a module's layer is the first whose prefix it starts with (the longest prefix wins).
LAYERS = [
    ["pubsubsse.errors", "pubsubsse.events", "pubsubsse.html._fragments"],
    ["pubsubsse.core"],
    ["pubsubsse.streams"],
    ["pubsubsse.handles", "pubsubsse.service", "pubsubsse._attachments", "pubsubsse.backends", "pubsubsse.publisher"],
    ["pubsubsse.servers"],
    ["pubsubsse.web"],
    ["pubsubsse.wsgi", "pubsubsse.flask", "pubsubsse.django", "pubsubsse.metrics", "pubsubsse"],
]


def layer(module: str) -> int:
    best, found = -1, None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), number
    assert found is not None, module
    return found


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every pubsubsse module ``name`` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("pubsubsse")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("pubsubsse"):
                out.append((base, node.lineno))
    return out


def test_imports_only_go_down() -> None:
    found = modules()
    upward = []
    for name, path in found.items():
        for target, line in imports(name, path):
            if layer(target) > layer(name):
                upward.append(f"{name}:{line} imports {target}")
    assert not upward, upward


def test_the_core_imports_only_the_leaves() -> None:
    for name, path in modules().items():
        if name.startswith("pubsubsse.core"):
            for target, line in imports(name, path):
                assert layer(target) <= 1, f"{name}:{line} imports {target}"


def test_the_checker_sees_an_upward_import() -> None:
    assert layer("pubsubsse.core._engine") < layer("pubsubsse.service")
    source = "from pubsubsse.service import SSEPubSubService\nif True:\n    from ..web import Endpoints\n"
    probe = PACKAGE / "core" / "_probe.py"
    tree = ast.parse(source)
    assert len([n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]) == 2
    probe.write_text(source)
    try:
        seen = {target for target, _ in imports("pubsubsse.core._probe", probe)}
    finally:
        probe.unlink()
    assert seen == {"pubsubsse.service", "pubsubsse.web"}


#: Modules and classes allowed over the limits (600 and 400 lines): none.
TOO_LARGE: dict[str, int] = {}
TOO_LARGE_CLASSES: dict[str, int] = {}


def test_every_module_is_small_and_the_root_holds_few() -> None:
    found = modules()
    root = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root) <= 12, root
    long_modules = {
        name: n for name, path in found.items() if (n := len(path.read_text().splitlines())) > TOO_LARGE.get(name, 600)
    }
    assert not long_modules, long_modules
    long_classes = []
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            size = node.end_lineno - node.lineno + 1 if isinstance(node, ast.ClassDef) else 0
            if size > TOO_LARGE_CLASSES.get(f"{name}.{getattr(node, 'name', '')}", 400):
                long_classes.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_classes, long_classes


def test_internal_modules_are_private() -> None:
    public_packages = {"pubsubsse", "pubsubsse.backends", "pubsubsse.flask", "pubsubsse.django", "pubsubsse.testing"}
    for name, path in modules().items():
        package, _, module = name.rpartition(".")
        if path.name == "__init__.py" or package in public_packages or name.count(".") == 1:
            continue
        assert module.startswith("_"), f"{name} is inside a private layer and should be named _{module}"
