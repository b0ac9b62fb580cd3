#!/usr/bin/env bash
# Run the contract suite on the lowest supported diffusers/transformers, in .venv-floor
# (created on first use: torch as in scripts/setup.sh, then this package with
# FLOOR_SPEC, default "diffusers==0.35.2 transformers==4.51.3", the floor pyproject names).
# What runs: the adapter contract suite, attach/detach, the public API, NUMINA's two phases
# and EasyCache. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${FLOOR_VENV:-.venv-floor}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
FLOOR_SPEC="${FLOOR_SPEC:-diffusers==0.35.2 transformers==4.51.3}"
quiet() { grep -v "^WARNING: Location" || true; }
want="$(echo "$FLOOR_SPEC" | sed -n 's/.*diffusers==\([^ ]*\).*/\1/p')"
if ! "$VENV/bin/python" -c "import numina_hooks, pytest, diffusers, sys; sys.exit(diffusers.__version__ != '$want')" >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | quiet
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $TORCH_SPEC 2>&1 | quiet
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet -e ".[test]" $FLOOR_SPEC 2>&1 | quiet
fi
"$VENV/bin/python" -c "import diffusers, transformers; print(f'floor suite: diffusers {diffusers.__version__}, transformers {transformers.__version__}')"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_adapter_contract.py tests/test_attach.py \
  tests/test_api.py tests/test_numina_generate.py tests/test_easycache.py "$@"
