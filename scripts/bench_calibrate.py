"""Benchmark: max calibration + Q/DQ insertion in qdq-onnx against onnxruntime's
quantize_static (QDQ format, MinMax, symmetric int8, per-channel weights), on the same float
model and the same 512 calibration images, side by side in one run, with peak memory.

    .venv/bin/python scripts/bench_calibrate.py [--model out/mnist/fp32.onnx]
        [--calib out/mnist/calib.npz] [--repeats 3]

Writes bench/results/calibrate.json. Run scripts/train_mnist.py first for the default model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import child_peak_rss_mib, count_qdq, ort_quantize_static, write_result


def run_qdq_onnx(model: str, calib: str, out: str) -> None:
    from qdq_onnx import pipeline

    source = pipeline.load(model)
    q = pipeline.quantize(source.model, data=calib, copy=False,
                          calibration=pipeline.CalibrationConfig(show_progress=False))
    pipeline.save(q.qdq, out)


def run_ort(model: str, calib: str, out: str) -> None:
    import onnx

    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    with np.load(calib, allow_pickle=False) as z:
        images = z[z.files[0]]
    ort_quantize_static(model, out, [{name: images[i:i + 32]} for i in range(0, len(images), 32)])


def peak_rss_mib(func: str, model: Path, calib: Path, out: Path) -> float:
    return child_peak_rss_mib("bench_calibrate", func, (model, calib, out),
                              preload="import onnx, onnxruntime, onnxruntime.quantization, "
                                      "qdq_onnx.pipeline")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="out/mnist/fp32.onnx")
    ap.add_argument("--calib", default="out/mnist/calib.npz")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model, calib = Path(args.model), Path(args.calib)
    if not model.exists() or not calib.exists():
        print(f"missing {model} or {calib}: run scripts/train_mnist.py first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        outs = {"qdq_onnx": Path(tmp) / "qdq.onnx", "ort": Path(tmp) / "ort.onnx"}
        # Memory first, while this process is small (children inherit its peak RSS).
        mem = {"qdq_onnx": peak_rss_mib("run_qdq_onnx", model, calib, outs["qdq_onnx"]),
               "ort": peak_rss_mib("run_ort", model, calib, outs["ort"])}
        times: dict[str, list[float]] = {"qdq_onnx": [], "ort": []}
        for _ in range(args.repeats):
            for name, fn in (("qdq_onnx", run_qdq_onnx), ("ort", run_ort)):
                t = time.perf_counter()
                fn(model, calib, outs[name])
                times[name].append(time.perf_counter() - t)
        counts = {k: count_qdq(v) for k, v in outs.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["ort"] / med["qdq_onnx"]
    out = write_result("calibrate", {
        "model": str(model), "calibration_images": 512, "repeats": args.repeats,
        "median_s": med, "speedup_qdq_onnx_vs_ort": speedup, "peak_rss_mib": mem,
        "qdq_nodes": counts})
    print(f"qdq-onnx insert+max calibration: {med['qdq_onnx']:.3f} s (peak +{mem['qdq_onnx']:.0f}"
          f" MiB); onnxruntime quantize_static: {med['ort']:.3f} s (peak +{mem['ort']:.0f} MiB)"
          f"; qdq-onnx is {speedup:.1f}x faster (target >= 2x)")
    print(f"Q/DQ nodes: {counts}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
