#!/usr/bin/env bash
# Create .venv-diffsynth: a second virtual environment for the DiffSynth-Studio
# adapter tests (tests/diffsynth/). It is separate from .venv because diffsynth
# needs torchvision, and torchvision must match torch exactly.
#
#   bash scripts/setup-diffsynth.sh
#
# Pins: DIFFSYNTH_TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", the pair
# known to import together on Linux x86_64 from PyPI; PyPI's torchvision does not
# import beside torch 2.13.0) and diffsynth==2.1.12 (the release the adapter was
# written against; see adapters/descriptions.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${DIFFSYNTH_VENV:-.venv-diffsynth}"
TORCH_SPEC="${DIFFSYNTH_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
quiet() { grep -v "^WARNING: Location" || true; }

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | quiet
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet $TORCH_SPEC 2>&1 | quiet
# The torch pair first, then diffsynth with the same pair named again so that its
# own requirements cannot move torch or torchvision.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet "diffsynth==2.1.12" $TORCH_SPEC 2>&1 | quiet
"$VENV/bin/python" -m pip install --quiet -e ".[test]" $TORCH_SPEC 2>&1 | quiet
"$VENV/bin/python" -c "import torch, torchvision, diffsynth, numina_hooks; print(f'{\"$VENV\"} ready: torch {torch.__version__}, torchvision {torchvision.__version__}, numina-hooks {numina_hooks.__version__}')"
