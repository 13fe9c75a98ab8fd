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
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "tmp"
MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0")

_MODELOPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
quantize(sys.argv[1], quantize_mode="int8", calibration_data=np.load(sys.argv[2]),
         calibration_eps=["cpu"], output_path=sys.argv[3], log_level="ERROR")
"""


def convert(name: str) -> Path:
    path = CACHE / f"{name}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        code = ("import keras; from qdq_onnx.compat.utils import convert_keras_model_to_onnx; "
                f"convert_keras_model_to_onnx(keras.applications.{name}(weights=None), "
                f"{str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


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
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modelopt-python", help="a Python with nvidia-modelopt installed")
    ap.add_argument("--calib", type=int, default=4, help="random calibration images")
    args = ap.parse_args()
    from qdq_onnx import quantize_model
    from qdq_onnx.diagnostics.lint import lint_model
    from qdq_onnx.files.onnx_files import load_model
    from qdq_onnx.placement.rules import load_rules

    rules = load_rules("tensorrt")
    results: dict[str, dict] = {}
    for name in MODELS:
        src = convert(name)
        static = with_static_batch(src, CACHE / f"{name}_b1.onnx")
        calib = np.random.default_rng(0).random((args.calib, 224, 224, 3), dtype=np.float32)
        outs = {}
        q = quantize_model(load_model(static), calibration_data=calib)
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
            report = lint_model(load_model(path), rules)
            results[name][tool] = {k: v for k, v in report.to_dict().items()
                                   if k not in ("layers", "findings")}
            results[name][tool]["finding_counts"] = {}
            for f in report.findings:
                counts = results[name][tool]["finding_counts"]
                counts[f.id] = counts.get(f.id, 0) + 1
            print(f"{name:15} {tool:12} {report.summary()}")
    out = ROOT / "bench" / "results" / "lint.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
