#!/usr/bin/env bash
# Run the DiffSynth-Studio tests in .venv-diffsynth (created by
# scripts/setup-diffsynth.sh when missing): tests/diffsynth/ and the DiffSynth
# cases of the adapter contract suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DIFFSYNTH_VENV:-.venv-diffsynth}"
if ! "$VENV/bin/python" -c "import diffsynth.pipelines.wan_video, numina_hooks, pytest" >/dev/null 2>&1; then
  bash scripts/setup-diffsynth.sh
fi
exec "$VENV/bin/python" -m pytest -q tests/diffsynth "tests/test_adapter_contract.py" -k "diffsynth or test_diffsynth" "$@"
