"""Inference latency of the emitted INT8 Q/DQ ONNX against the FP32 ONNX in onnxruntime on
the CPU, batch 1 and 32, side by side (alternating) in one run.

This is a CPU proxy: onnxruntime fuses Q/DQ pairs into its own int8 kernels here, while the
real target, TensorRT on an NVIDIA GPU, builds an INT8 engine from the same file.

    .venv/bin/python scripts/bench_inference.py [--fp32 out/mnist/fp32.onnx]
        [--int8 out/mnist/qat.onnx] [--runs 200]

Writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import write_result

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", default="out/mnist/fp32.onnx")
    ap.add_argument("--int8", default="out/mnist/qat.onnx")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()

    from qdq_onnx.graph.sessions import inference_session

    paths = {"fp32": Path(args.fp32), "int8": Path(args.int8)}
    for p in paths.values():
        if not p.exists():
            print(f"missing {p}: run scripts/train_mnist.py and scripts/qat_mnist.py first",
                  file=sys.stderr)
            return 2
    sessions = {k: inference_session(str(p)) for k, p in paths.items()}
    inp = sessions["fp32"].get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    results = {}
    for batch in (1, 32):
        x = np.random.default_rng(0).random((batch, *shape[1:]), dtype=np.float32)
        feeds = {inp.name: x}
        for s in sessions.values():
            for _ in range(20):
                s.run(None, feeds)
        lat: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.runs):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds)
                lat[k].append((time.perf_counter() - t) * 1000)
        med = {k: statistics.median(v) for k, v in lat.items()}
        results[str(batch)] = {"median_ms": med, "int8_over_fp32": med["int8"] / med["fp32"]}
        print(f"batch {batch:3d}: FP32 {med['fp32']:.3f} ms, INT8 Q/DQ {med['int8']:.3f} ms, "
              f"INT8/FP32 latency ratio {med['int8'] / med['fp32']:.2f} (CPU proxy)")
    write_result("inference", {
        "models": {k: str(v) for k, v in paths.items()}, "runs": args.runs,
        "note": "CPU proxy: onnxruntime int8 kernels; TensorRT INT8 on GPU is the target",
        "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
