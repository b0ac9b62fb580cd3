"""The package's layers, read from the source (every ``import`` statement, at module level
or inside functions).

* core (hookspecs, context, views, hooking, hub, driver, handle) never imports the method
  (``numina_hooks.numina``) or the adapters; the adapters never import the method; the
  method never imports the adapters and never reads a private member of the handle;
* ``eval`` never imports the command line, ``toy`` never imports ``eval`` (``eval`` may
  import ``toy``: the toy benchmark, counter and model), and the modules both build on
  (options, media, metrics) import neither."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest


def _imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules ``source`` (module ``module``) imports, relative ones
    resolved; ``from X import y`` also yields ``X.y`` (``y`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _package_modules(name: str) -> list[tuple[str, Path, bool]]:
    """(module name, file, is package) for ``name`` and every module under it."""
    pkg = importlib.import_module(name)
    if not hasattr(pkg, "__path__"):
        return [(name, Path(pkg.__file__), False)]
    out = [(name, Path(pkg.__file__), True)]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
        spec = importlib.util.find_spec(info.name)
        out.append((info.name, Path(spec.origin), info.ispkg))
    return out


def _offending(package: str, forbidden: str) -> list[str]:
    bad = []
    for module, path, is_package in _package_modules(package):
        for target in _imported_modules(path.read_text(encoding="utf-8"), module, is_package):
            if target == forbidden or target.startswith(forbidden + "."):
                bad.append(f"{module} imports {target}")
    return sorted(set(bad))


def test_the_resolver_sees_relative_absolute_and_nested_imports():
    source = ("from ..cli import CliError\nimport numina_hooks.cli as c\n"
              "def f():\n    from .. import cli\n    from .run import run_eval\n")
    found = _imported_modules(source, "numina_hooks.eval.command", is_package=False)
    assert {"numina_hooks.cli", "numina_hooks.cli.CliError", "numina_hooks.eval.run"} <= found
    assert _imported_modules("from . import world\n", "numina_hooks.toy", is_package=True) >= {"numina_hooks.toy.world"}


@pytest.mark.parametrize("package, forbidden", [
    ("numina_hooks.eval", "numina_hooks.cli"),
    ("numina_hooks.toy", "numina_hooks.eval"),
    ("numina_hooks.toy", "numina_hooks.cli"),
    ("numina_hooks.options", "numina_hooks.cli"),
    ("numina_hooks.options", "numina_hooks.eval"),
    ("numina_hooks.media", "numina_hooks.cli"),
    ("numina_hooks.media", "numina_hooks.eval"),
    ("numina_hooks.metrics", "numina_hooks.eval"),
    ("numina_hooks.metrics", "numina_hooks.toy"),
])
def test_import_direction(package, forbidden):
    assert _package_modules(package), package
    assert _offending(package, forbidden) == []


def test_the_walk_covers_every_module_of_eval_and_toy():
    for package in ("numina_hooks.eval", "numina_hooks.toy"):
        files = {p.resolve() for _, p, _ in _package_modules(package)}
        on_disk = {p.resolve() for p in Path(importlib.import_module(package).__file__).parent.glob("*.py")}
        assert on_disk <= files, sorted(on_disk - files)


def test_the_lazy_names_of_eval_load_from_eval_or_below():
    """``numina_hooks.eval`` loads its public names by module name on first use (not an
    ``import`` statement): those modules keep the same direction."""
    import numina_hooks.eval as ev

    targets = {importlib.util.resolve_name(m, ev.__name__) for m in ev._EXPORTS.values()}
    assert not [t for t in targets if t.startswith("numina_hooks.cli")]
    for name in ev.__all__:
        assert getattr(ev, name) is not None


CORE = ["hookspecs", "context", "views", "hooking", "hub", "driver", "handle", "compat"]


@pytest.mark.parametrize("module", CORE)
@pytest.mark.parametrize("forbidden", ["numina_hooks.numina", "numina_hooks.adapters"])
def test_the_core_never_imports_the_method_or_the_adapters(module, forbidden):
    assert _offending(f"numina_hooks.{module}", forbidden) == []


def test_adapters_never_import_the_method_and_the_method_never_the_adapters():
    assert len(_package_modules("numina_hooks.adapters")) > 5
    assert _offending("numina_hooks.adapters", "numina_hooks.numina") == []
    assert _offending("numina_hooks.numina", "numina_hooks.adapters") == []


def _private_handle_reads(source: str) -> list[str]:
    return sorted(
        f"line {node.lineno}: handle.{node.attr}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "handle"
        and node.attr.startswith("_")
    )


def test_the_method_uses_only_the_public_handle():
    assert _private_handle_reads("def f(handle):\n    return handle._hub\n") == ["line 2: handle._hub"]
    for module, path, _ in _package_modules("numina_hooks.numina"):
        assert _private_handle_reads(path.read_text(encoding="utf-8")) == [], module
