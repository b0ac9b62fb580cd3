#!/usr/bin/env bash
# Create .venv in the repository root, install numina-hooks with everything the
# demo and the tests need, then run the main job (`numina demo`).
#
#   bash scripts/setup.sh            # set up and run the demo
#   bash scripts/setup.sh --no-demo  # set up only
#
# torch: TORCH_SPEC picks the build (default torch==2.13.0; on Linux x86_64 PyPI
# serves the CUDA build of that release, so GPU users get CUDA; for a CPU-only
# wheel use e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install --quiet $TORCH_SPEC 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install --quiet -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import numina_hooks, torch, diffusers; print(f'numina-hooks {numina_hooks.__version__} ready: torch {torch.__version__}, diffusers {diffusers.__version__}')"

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/numina demo
fi
