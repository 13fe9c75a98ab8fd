#!/usr/bin/env bash
# The GPU check of the torch training backend, for the GPU machines lent now and then
# (never run by CI or `make test`). Those machines hold Python 3.12 with a CUDA build of
# PyTorch, onnx and onnxruntime, reach no package index, and get files only as carried
# paths (64 MiB in all): prepare them here first, then run this there.
#
#   bash scripts/gpu_carry.sh                 # here: out/gpu_carry (wheels, MNIST, the CNN)
#   bash scripts/gpu_check.sh                 # there (device tool: carry out/gpu_carry)
#
# It installs qdq-onnx (no dependencies) and onnx-graphsurgeon from the carried wheel, then
# prints and writes (to $OUT, else out/gpu_check) scripts/gpu_check.py's figures: steps/s
# of ResNet50 QAT at batch 64 on the GPU and on the CPU, the step-2 parity of the GPU
# against the CPU, and the accuracy of one MNIST QAT epoch on the GPU. Budget: under 8
# minutes with the install.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PY=${PYTHON:-python3}
CARRY=${CARRY:-out/gpu_carry}
DEST=${OUT:-out/gpu_check}
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: no NVIDIA GPU here"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -d "$CARRY" ] || { echo "gpu_check: $CARRY is missing: run scripts/gpu_carry.sh and carry it"; exit 2; }
"$PY" -m pip install --quiet --no-index --no-deps "$CARRY"/wheels/*.whl
"$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
echo "gpu_check: installed in $(( $(date +%s) - START )) s"
"$PY" scripts/gpu_check.py --carry "$CARRY" --out "$DEST"
echo "gpu_check: $(( $(date +%s) - START )) s in all"
