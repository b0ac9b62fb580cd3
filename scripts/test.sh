#!/usr/bin/env bash
# Run the whole test suite: the main suite in .venv (set up first if missing), then the
# contract suite on the lowest supported diffusers/transformers in .venv-floor
# (scripts/test-floor.sh, created on first use, about a minute), then the DiffSynth-Studio
# suite in .venv-diffsynth (diffsynth needs a torch/torchvision pair of its own;
# scripts/setup-diffsynth.sh creates it on first use, about 3 minutes).
# NUMINA_SKIP_FLOOR=1 / NUMINA_SKIP_DIFFSYNTH=1 leave those out, and say so.
# Extra arguments go to the main suite's pytest (e.g. -m "not slow" for the quick loop; none: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import numina_hooks, diffusers, pytest" >/dev/null 2>&1; then
  bash scripts/setup.sh --no-demo
fi
.venv/bin/python -m pytest -q "$@"
if [ "${NUMINA_SKIP_FLOOR:-0}" = "1" ]; then
  echo "NOT RUN: the suite on the lowest supported diffusers (NUMINA_SKIP_FLOOR=1); run bash scripts/test-floor.sh"
else
  bash scripts/test-floor.sh
fi
if [ "${NUMINA_SKIP_DIFFSYNTH:-0}" = "1" ]; then
  echo "NOT RUN: the DiffSynth-Studio suite (NUMINA_SKIP_DIFFSYNTH=1); run bash scripts/test-diffsynth.sh"
else
  bash scripts/test-diffsynth.sh
fi
