#!/usr/bin/env bash
# The prepared GPU check: LSE backends vs float64, guided vs unguided vs dense cross-attention
# at Wan2.1-1.3B size, NUMINA vs plain on a random full-size Wan2.1-1.3B transformer, and
# torch.compile graph counts. Writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md.
#
#   bash scripts/gpu-check.sh OUTDIR [more gpu_check.py arguments, e.g. --quick or --sections ...]
#
# Run from anywhere; it works in the repository root and imports numina_hooks from source.
# Wheels in .whl/ (diffusers and what it imports that the machine lacks, e.g. requests, urllib3,
# idna, certifi, charset_normalizer; the Wan sections need them) are installed offline into
# /tmp/site first. PYTHON=... picks the interpreter (default python3, the one with CUDA torch).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/gpu-check.sh OUTDIR [gpu_check.py arguments]" >&2
  exit 2
fi
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd)
shift
PY=${PYTHON:-python3}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
# numina_hooks.adapters lives in adapters/ (a package-dir mapping): install the package itself
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
  --upgrade --target /tmp/site . >/dev/null
export PYTHONPATH=/tmp/site
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false  # nothing is downloaded
echo "gpu-check: $(date -u +%H:%M:%S) python $("$PY" -c 'import sys; print(sys.version.split()[0])'), out $OUTDIR" 
exec "$PY" benchmarks/gpu_check.py --device cuda --out "$OUTDIR" "$@"
