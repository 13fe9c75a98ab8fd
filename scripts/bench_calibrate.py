"""Benchmark: max calibration + Q/DQ insertion in qdq-onnx against onnxruntime's
quantize_static (QDQ format, MinMax, symmetric int8, per-channel weights), on the same float
model and the same 512 calibration images, side by side in one run, with peak memory.

    .venv/bin/python scripts/bench_calibrate.py [--model out/mnist/fp32.onnx]
        [--calib out/mnist/calib.npz] [--repeats 3]

Writes bench/results/calibrate.json. Run scripts/train_mnist.py first for the default model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run_qdq_onnx(model: Path, calib: Path, out: Path) -> None:
    from qdq_onnx.convert.prepare import prepare_model
    from qdq_onnx.files.onnx_files import load_model, save_model_atomic
    from qdq_onnx.placement.planner import plan_placement
    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.quantize.calibration import collect_amax
    from qdq_onnx.quantize.insert import insert_qdq

    prepared, _ = prepare_model(load_model(model), copy=False)
    plan = plan_placement(prepared, load_rules("tensorrt"))
    amax = collect_amax(prepared, plan, str(calib), batch_size=32, show_progress=False)
    qdq, _ = insert_qdq(prepared, plan, amax, "calibrated:max", in_place=True)
    save_model_atomic(qdq, out)


def run_ort(model: Path, calib: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    with np.load(calib) as z:
        images = z[z.files[0]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: images[i:i + 32]} for i in range(0, len(images), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def peak_rss_mib(func: str, model: Path, calib: Path, out: Path) -> float:
    code = "\n".join([
        "import resource, sys, pathlib",
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
        "import bench_calibrate as b",
        "import onnx, onnxruntime, onnxruntime.quantization, qdq_onnx.quantize.insert",
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        f"b.{func}(pathlib.Path({str(model)!r}), pathlib.Path({str(calib)!r}), "
        f"pathlib.Path({str(out)!r}))",
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"])
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024.0


def count_qdq(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    return {op: sum(n.op_type == op for n in m.graph.node)
            for op in ("QuantizeLinear", "DequantizeLinear")}


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
    import onnx
    import onnxruntime

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU",
        "versions": {"python": platform.python_version(), "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "model": str(model), "calibration_images": 512, "repeats": args.repeats,
        "median_s": med, "speedup_qdq_onnx_vs_ort": speedup, "peak_rss_mib": mem,
        "qdq_nodes": counts,
    }
    out = ROOT / "bench" / "results" / "calibrate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"qdq-onnx insert+max calibration: {med['qdq_onnx']:.3f} s (peak +{mem['qdq_onnx']:.0f}"
          f" MiB); onnxruntime quantize_static: {med['ort']:.3f} s (peak +{mem['ort']:.0f} MiB)"
          f"; qdq-onnx is {speedup:.1f}x faster (target >= 2x)")
    print(f"Q/DQ nodes: {counts}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
