"""The package's layers, checked on the source: what each layer may import and touch.

core (hookspecs, context, views, hooking, hub, driver, handle) -> never the method or the
adapters; adapters -> the core only, never the method; the method (numina_hooks.numina)
-> never the adapters, and never a private member of the handle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "numina_hooks"
CORE = ["hookspecs", "context", "views", "hooking", "hub", "driver", "handle"]


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against
    ``package``, the dotted package the file belongs to), at any depth of the file."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _touches(names: set[str], prefix: str) -> list[str]:
    return sorted(n for n in names if n == prefix or n.startswith(prefix + "."))


@pytest.mark.parametrize("module", CORE)
def test_the_core_never_imports_the_method_or_the_adapters(module):
    names = _imports(PACKAGE / f"{module}.py", "numina_hooks")
    assert not _touches(names, "numina_hooks.numina"), f"numina_hooks/{module}.py imports the method"
    assert not _touches(names, "numina_hooks.adapters"), f"numina_hooks/{module}.py imports the adapters"


@pytest.mark.parametrize("path", sorted((ROOT / "adapters").glob("*.py")), ids=lambda p: p.name)
def test_adapters_never_import_the_method(path):
    names = _imports(path, "numina_hooks.adapters")
    assert not _touches(names, "numina_hooks.numina"), f"adapters/{path.name} imports the method"


@pytest.mark.parametrize("path", sorted((PACKAGE / "numina").glob("*.py")), ids=lambda p: p.name)
def test_the_method_uses_only_the_public_handle(path):
    tree = ast.parse(path.read_text())
    private = sorted(
        f"line {node.lineno}: handle.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "handle"
        and node.attr.startswith("_")
    )
    assert not private, f"numina/{path.name} reads private members of the handle: {private}"
    names = _imports(path, "numina_hooks.numina")
    assert not _touches(names, "numina_hooks.adapters"), f"numina/{path.name} imports the adapters"


def test_the_checker_sees_a_violation(tmp_path):
    """The import walk is not vacuous: a relative import of the method from the core is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from .numina.plugin import Numina\n    return handle._hub\n")
    assert _touches(_imports(bad, "numina_hooks"), "numina_hooks.numina") == [
        "numina_hooks.numina.plugin", "numina_hooks.numina.plugin.Numina"]
