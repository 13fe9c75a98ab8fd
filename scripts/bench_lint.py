"""Lint the Q/DQ outputs of three tools on keras.applications models (weights=None):
qdq-onnx, onnxruntime `quantize_static` (QDQ, MinMax, symmetric int8, per-channel) and,
when a Python with nvidia-modelopt is given, NVIDIA Model Optimizer's ONNX PTQ (int8).
Prints and stores a side-by-side table of INT8 weighted layers and broken fusions.

    .venv/bin/python scripts/bench_lint.py [--modelopt-python /path/to/venv/bin/python]

Model Optimizer is not a dependency: install it in a separate virtual environment
(`python3 -m venv /tmp/mo && /tmp/mo/bin/pip install "nvidia-modelopt[onnx]"`).
Writes bench/results/lint.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from bench_common import CACHE, keras_application_onnx, ort_quantize_static, write_result

MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0")

_MODELOPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
quantize(sys.argv[1], quantize_mode="int8", calibration_data=np.load(sys.argv[2]),
         calibration_eps=["cpu"], output_path=sys.argv[3], log_level="ERROR")
"""


def with_static_batch(src: Path, dst: Path) -> Path:
    """A copy with batch 1 (Model Optimizer wants static shapes)."""
    import onnx

    m = onnx.load(str(src))
    for vi in list(m.graph.input) + list(m.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    onnx.save(m, str(dst))
    return dst


def run_ort(src: Path, calib: np.ndarray, out: Path) -> None:
    import onnx

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    ort_quantize_static(src, out, [{name: calib[i:i + 1]} for i in range(len(calib))])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modelopt-python", help="a Python with nvidia-modelopt installed")
    ap.add_argument("--calib", type=int, default=4, help="random calibration images")
    args = ap.parse_args()
    from qdq_onnx import pipeline, quantize_model

    rules = pipeline.PlacementConfig().resolve().rules
    results: dict[str, dict] = {}
    for name in MODELS:
        src = keras_application_onnx(name)
        static = with_static_batch(src, CACHE / f"{name}_b1.onnx")
        calib = np.random.default_rng(0).random((args.calib, 224, 224, 3), dtype=np.float32)
        outs = {}
        q = quantize_model(pipeline.load(static).model, calibration_data=calib)
        outs["qdq-onnx"] = CACHE / f"{name}_qdq_onnx.onnx"
        q.save(outs["qdq-onnx"])
        outs["onnxruntime"] = CACHE / f"{name}_ort.onnx"
        run_ort(static, calib, outs["onnxruntime"])
        if args.modelopt_python:
            np.save(CACHE / "calib.npy", calib)
            outs["modelopt"] = CACHE / f"{name}_modelopt.onnx"
            res = subprocess.run([args.modelopt_python, "-c", _MODELOPT, str(static),
                                  str(CACHE / "calib.npy"), str(outs["modelopt"])],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                print(f"modelopt failed on {name}: {res.stderr[-400:]}", file=sys.stderr)
                outs.pop("modelopt")
        results[name] = {}
        for tool, path in outs.items():
            report = pipeline.lint(pipeline.load(path).model, rules)
            results[name][tool] = {k: v for k, v in report.to_dict().items()
                                   if k not in ("layers", "findings")}
            results[name][tool]["finding_counts"] = {}
            for f in report.findings:
                counts = results[name][tool]["finding_counts"]
                counts[f.id] = counts.get(f.id, 0) + 1
            print(f"{name:15} {tool:12} {report.summary()}")
    write_result("lint", {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
