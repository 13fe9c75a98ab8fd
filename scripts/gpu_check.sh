#!/usr/bin/env bash
# One QAT step on a GPU, for a machine that has one (never run by CI or `make test`).
#
#   bash scripts/gpu_check.sh            # creates .venv-gpu with Python 3.11 when missing
#   PYTHON=/path/to/python3.11 STEPS=5 BATCH=32 bash scripts/gpu_check.sh
#
# It installs onnxruntime-training's CUDA build (1.19.2, the last release; CUDA 12 and
# cuDNN 9, taken from NVIDIA's pip wheels) in place of the CPU build, builds a
# ResNet-style conv net (ten 3x3 convolutions, 224x224x3 input, random weights: no
# download, no TensorFlow), inserts Q/DQ by the TensorRT rules, calibrates, and times QAT
# steps on the GPU and on the CPU, printing the step times and the GPU/CPU ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV_GPU:-.venv-gpu}
STEPS=${STEPS:-5}
BATCH=${BATCH:-32}

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this machine has no NVIDIA GPU"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# The CPU and CUDA builds share the module name `onnxruntime`: only the CUDA one here.
grep -v -i '^onnxruntime' constraints.txt > "$VENV/constraints-gpu.txt"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c "$VENV/constraints-gpu.txt" -e . \
  onnxruntime-training==1.19.2 nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 \
  nvidia-cudnn-cu12==9.* nvidia-cufft-cu12 nvidia-curand-cu12
# onnxruntime loads the CUDA libraries by name: put the wheels' lib folders on the path.
LIBS=$("$VENV/bin/python" - <<'EOF'
import glob, os, site
print(":".join(sorted(glob.glob(os.path.join(site.getsitepackages()[0], "nvidia", "*", "lib")))))
EOF
)
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

STEPS=$STEPS BATCH=$BATCH "$VENV/bin/python" - <<'EOF'
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx import pipeline, quantize_model

steps, batch = int(os.environ["STEPS"]), int(os.environ["BATCH"])
rng = np.random.default_rng(0)
nodes, inits, x, channels = [], [], "image", 3
for i, (out, stride) in enumerate([(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 3
                                  + [(256, 2), (256, 1)]):
    w = (rng.standard_normal((out, channels, 3, 3)) * np.sqrt(2 / (9 * channels)))
    inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
              numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}")]
    nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                               pads=[1, 1, 1, 1], strides=[stride, stride]),
              helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
    x, channels = f"r{i}", out
inits += [numpy_helper.from_array((rng.standard_normal((channels, 1000)) * 0.01)
                                  .astype(np.float32), "fc")]
nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
          helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
          helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="fc")]
graph = helper.make_graph(nodes, "gpu_check", [helper.make_tensor_value_info(
    "image", TensorProto.FLOAT, ["N", 3, 224, 224])], [helper.make_tensor_value_info(
        "logits", TensorProto.FLOAT, ["N", 1000])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
images = rng.random((batch * (steps + 1), 3, 224, 224), dtype=np.float32)
labels = rng.integers(0, 1000, len(images))
qdq = quantize_model(model, calibration_data=images[:batch]).onnx


def seconds_per_step(device: str) -> float:
    session = pipeline.Training(qdq, pipeline.TrainConfig(learning_rate=1e-4, device=device))
    fit = pipeline.FitConfig(batch_size=batch, steps_per_epoch=1, verbose=0)
    session.fit(images[:batch], labels[:batch], fit)  # warm-up: kernels, allocations
    start = time.perf_counter()
    session.fit(images[batch:], labels[batch:],
                pipeline.FitConfig(batch_size=batch, steps_per_epoch=steps, verbose=0))
    took = (time.perf_counter() - start) / steps
    session.close()
    return took


gpu = seconds_per_step("cuda")
print(f"GPU QAT step (batch {batch}, 224x224x3, 10 conv + fc): {gpu * 1e3:.1f} ms")
cpu = seconds_per_step("cpu")
print(f"CPU QAT step, same model and batch: {cpu * 1e3:.1f} ms ({cpu / gpu:.1f}x the GPU's)")
EOF
