#!/usr/bin/env bash
# Train (or resume) the toy model on one CUDA GPU in a few minutes, with the same data,
# objective and arguments as the CPU run (python -m numina_hooks.toy.train).
#
#   bash scripts/train-toy-gpu.sh RUN_DIR OUT_DIR [STOP_STEPS...]
#
# RUN_DIR holds checkpoint.pt (resumed when present). The run goes through the STOP_STEPS
# (default 8000) in order; at each stop it saves the EMA weights as OUT_DIR/weights-STEP.tar
# (model.safetensors + info.json, loadable with load_toy_pipeline after untarring). It stops
# starting new stops once TRAIN_SECONDS (default 420) have passed; a stop cut short by that
# budget resumes from its last checkpoint (every 250 steps) on the next run.
# Clips are made by WORKERS processes (default: CPU cores - 2) ahead of the loop.
# DEVICE (default cuda) is where it trains. PYTHON (default python3) must have torch with CUDA; when .whl/ exists its wheels are
# installed to /tmp/site first (for a machine without package access).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: train-toy-gpu.sh RUN_DIR OUT_DIR [STOP_STEPS...]}
out=${2:?usage: train-toy-gpu.sh RUN_DIR OUT_DIR [STOP_STEPS...]}
shift 2
stops=("$@")
[ ${#stops[@]} -gt 0 ] || stops=(8000)
PYTHON=${PYTHON:-python3}
budget=${TRAIN_SECONDS:-420}
workers=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
mkdir -p "$run" "$out"
start=$(date +%s)
for stop in "${stops[@]}"; do
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -le 20 ]; then
    echo "train-toy-gpu: time budget spent before step $stop" >&2
    break
  fi
  echo "train-toy-gpu: to step $stop (${left}s of budget left)" >&2
  rc=0
  timeout "$left" "$PYTHON" -m numina_hooks.toy.train --out "$run" --steps "$stop" \
    --device "${DEVICE:-cuda}" --workers "$workers" --no-progress || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "train-toy-gpu: stopped before step $stop (exit $rc)" >&2
    break
  fi
  tar -C "$run/weights" -cf "$out/weights-$stop.tar" model.safetensors info.json
done
cp "$run/checkpoint.pt" "$run/loss.png" "$out/" 2>/dev/null || true
