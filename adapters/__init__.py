"""Adapters: one module per model family, mapping its attention onto views.

Shipped inside the wheel as ``numina_hooks.adapters`` (setuptools
``package-dir``); there is deliberately no top-level ``adapters`` package, which
would clash with the PyPI package of that name.
"""

if __name__ != "numina_hooks.adapters":  # imported as a top-level package from the repo root
    raise ImportError(
        f"this folder is numina-hooks' adapters package and cannot be imported as {__name__!r}; "
        "import it as `numina_hooks.adapters` (install the project with `pip install -e .`, "
        "or run `bash scripts/setup.sh`)"
    )

from .base import Adapter, DiffusersDriver, adapter_for, registered_adapters  # noqa: E402
from .generic import adapter_for_description  # noqa: E402

__all__ = ["Adapter", "DiffusersDriver", "adapter_for", "adapter_for_description", "registered_adapters"]
