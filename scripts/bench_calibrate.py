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
from bench_common import (
    child_peak_rss_mib,
    count_qdq,
    keras_application_onnx,
    ort_quantize_static,
    write_result,
)


def run_qdq_onnx(model: str, calib: str, out: str) -> None:
    from qdq_onnx import pipeline

    source = pipeline.load(model)
    # like for like with quantize_static's MinMax: max ranges, no output-aware refinement
    # and no accuracy guard (the defaults since issue 27; each adds evaluation passes)
    q = pipeline.insert(source.model, data=calib, copy=False,
                        calibration=pipeline.CalibrationConfig(
                            method="max", refine_scales="off", show_progress=False),
                        guard=pipeline.AccuracyGuardConfig(enabled=False))
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


def resnet50_methods(images: int = 16) -> dict:
    """Calibration of every ResNet50 activation tensor with each method: the data passes
    (one for max, two for the histogram methods) and the threshold search per tensor."""
    from qdq_onnx import pipeline
    from qdq_onnx.convert.prepare import prepare_model
    from qdq_onnx.quantize.calibration import collect_stats
    from qdq_onnx.quantize.config import SINGLE_METHODS
    from qdq_onnx.quantize.methods import amax_from_stats
    from qdq_onnx.types.scheme import INT8

    model = pipeline.load(keras_application_onnx("ResNet50")).model
    prepared, _ = prepare_model(model)
    tensors = sorted({p.tensor for p in pipeline.plan_placement(prepared).activations()})
    x = np.random.default_rng(0).random((images, 224, 224, 3), dtype=np.float32)
    t0 = time.perf_counter()
    config = pipeline.CalibrationConfig(batch_size=8, show_progress=False)
    collect_stats(prepared, tensors, x, config, with_hist=False)
    t_max = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = collect_stats(prepared, tensors, x, config)
    t_hist = time.perf_counter() - t0
    search = {}
    for method in SINGLE_METHODS:  # auto picks among them at each reading layer
        t0 = time.perf_counter()
        for s in stats.values():
            amax_from_stats(s, method, INT8)
        search[method] = (time.perf_counter() - t0) / len(stats) * 1000
    return {"tensors": len(tensors), "images": images, "collect_max_s": t_max,
            "collect_histograms_two_passes_s": t_hist, "search_ms_per_tensor": search}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="out/mnist/fp32.onnx")
    ap.add_argument("--calib", default="out/mnist/calib.npz")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resnet50-images", type=int, default=16,
                    help="images for the per-method ResNet50 timing (0: skip it)")
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
    r50 = resnet50_methods(args.resnet50_images) if args.resnet50_images else None
    out = write_result("calibrate", {
        "model": str(model), "calibration_images": 512, "repeats": args.repeats,
        "median_s": med, "speedup_qdq_onnx_vs_ort": speedup, "peak_rss_mib": mem,
        "qdq_nodes": counts, "resnet50_methods": r50})
    if r50:
        per = ", ".join(f"{k} {v:.2f} ms" for k, v in r50["search_ms_per_tensor"].items())
        print(f"ResNet50, {r50['tensors']} activation tensors, {r50['images']} images: max "
              f"calibration {r50['collect_max_s']:.1f} s (one pass); histograms "
              f"{r50['collect_histograms_two_passes_s']:.1f} s (two passes); threshold search "
              f"per tensor: {per}")
    print(f"qdq-onnx insert+max calibration: {med['qdq_onnx']:.3f} s (peak +{mem['qdq_onnx']:.0f}"
          f" MiB); onnxruntime quantize_static: {med['ort']:.3f} s (peak +{mem['ort']:.0f} MiB)"
          f"; qdq-onnx is {speedup:.1f}x faster (target >= 2x)")
    print(f"Q/DQ nodes: {counts}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
