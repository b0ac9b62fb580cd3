#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import numina_hooks, diffusers, pytest" >/dev/null 2>&1; then
  bash scripts/setup.sh --no-demo
fi
exec .venv/bin/python -m pytest -q "$@"
