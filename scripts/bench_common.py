"""What the benchmark scripts share: the machine/versions block of every results file, peak
memory of a step in a fresh process, the onnxruntime `quantize_static` baseline, Q/DQ node
counts, and writing results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / "tmp"


def machine_info() -> dict[str, Any]:
    """Date, machine and the versions of the stack, for every results file."""
    import numpy
    import onnx
    import onnxruntime

    return {"date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU",
            "versions": {"python": platform.python_version(), "numpy": numpy.__version__,
                         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>.json with the machine block first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({**machine_info(), **result}, indent=1) + "\n")
    return out


def child_peak_rss_mib(module: str, func: str, args: Iterable[Any],
                       preload: str = "") -> float:
    """Peak resident memory that `module.func(*args)` adds in a fresh process, over what the
    process holds after `preload` (an import line). Measure while the calling process is
    small: Linux children inherit the parent's peak RSS across exec."""
    code = "\n".join([
        "import resource, sys, pathlib",
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
        f"import {module} as b",
        preload,
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        f"b.{func}(*{[str(a) for a in args]!r})",
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024.0


def process_peak_rss_mib(cmd: list[str]) -> float:
    """Peak resident memory of the process `cmd`, whole (what /usr/bin/time reports), read
    by a small wrapper so the measurement does not inherit this process's peak."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024.0


def ort_quantize_static(src: str | Path, out: str | Path, batches: list[dict]) -> None:
    """onnxruntime's quantizer configured as close to TensorRT's needs as it goes: QDQ
    format, MinMax, symmetric int8 activations and per-channel int8 weights."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def count_qdq(path: str | Path) -> dict[str, int]:
    """QuantizeLinear and DequantizeLinear node counts of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {op: sum(n.op_type == op for n in m.graph.node)
            for op in ("QuantizeLinear", "DequantizeLinear")}


def tf2onnx_application_onnx(name: str) -> Path:
    """bench/tmp/<name>.tf2onnx.onnx: keras.applications.<name>(weights=None) converted by
    plain tf2onnx (opset 13, its NHWC input kept: a Transpose at the graph input), as a
    user who brings "any float ONNX file" has it."""
    path = CACHE / f"{name}.tf2onnx.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        code = ("import keras, onnx, tensorflow as tf, tf2onnx; "
                f"m = keras.applications.{name}(weights=None); "
                "spec = [tf.TensorSpec((None, *m.input_shape[1:]), tf.float32, name='input')]; "
                "f = tf.function(lambda x: m(x)); "
                "p, _ = tf2onnx.convert.from_function(f, input_signature=spec, opset=13); "
                f"onnx.save(p, {str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def keras_application_onnx(name: str) -> Path:
    """bench/tmp/<name>.onnx: keras.applications.<name>(weights=None) converted by qdq-onnx
    (in a subprocess, so TensorFlow stays out of the benchmark process)."""
    path = CACHE / f"{name}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        code = ("import keras; from qdq_onnx import pipeline; "
                f"pipeline.save(pipeline.convert(keras.applications.{name}(weights=None)), "
                f"{str(path)!r}, check='the converted model')")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def compile_cosine(keras: Any, model: Any, lr: float, steps: int) -> None:
    """Compile a Keras model as qdq-onnx fine-tunes (Adam, cosine decay from `lr` over
    `steps`, sparse cross-entropy on logits): the float training and the float control."""
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def qat_benchmark_args(train: int, epochs: int) -> Any:
    """The options of the QAT benchmarks (training size, float epochs, QAT epochs and
    learning rate), parsed, with warnings and TensorFlow's log quiet."""
    import argparse
    import warnings

    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=train)
    ap.add_argument("--epochs", type=int, default=epochs, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4, help="QAT and control learning rate")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return args
