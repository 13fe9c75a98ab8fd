"""Files for a strongly typed TensorRT (11): what each compute op runs in, and what the
float remainder's type and FP8 cost in accuracy. Every figure comes from ONNX files run in
onnxruntime.

1. Typing: the five keras.applications test models (weights=None) and the transformer
   benchmark's ViT-style encoder, quantized by qdq-onnx with its defaults (INT8, FP16
   remainder, calibrated on random images): compute ops per precision (lint --typing
   strong), FP32 ops not recorded by the range guard, graph I/O types against the float
   model, Cast->Cast chains, and the newest onnx checker (full) and onnxruntime (a run)
   where .venv-newest exists. With --modelopt-python, Model Optimizer's ONNX PTQ (int8,
   its default FP16 remainder) on the same graphs, linted the same way.
2. Accuracy: the MNIST CNN of train_mnist.py (test set) and the transformer encoder (trained
   here for --transformer-epochs): FP32; INT8 with the FP32 and the FP16 remainder; FP8 PTQ
   (FP32 and FP16 remainders); FP8 QAT against the float model trained for the same steps.
   ResNet50 (random weights): output SQNR against FP32 on held-out random inputs.

    .venv/bin/python scripts/bench_strong_typing.py [--modelopt-python /tmp/mo/bin/python]

Writes bench/results/strong_typing.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from bench_common import CACHE, keras_application_onnx, write_result

ROOT = Path(__file__).resolve().parent.parent
APPS = ("ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0", "InceptionV3")
NEWEST = ROOT / ".venv-newest" / "bin" / "python"
_NEWEST_CHECK = """
import sys, numpy as np, onnx, onnxruntime as ort
onnx.checker.check_model(sys.argv[1], full_check=True)
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in i.shape]
s.run(None, {i.name: np.zeros(shape, np.float32)})
print(onnx.__version__, ort.__version__)
"""
_MODELOPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
quantize(sys.argv[1], quantize_mode=sys.argv[4], calibration_data=np.load(sys.argv[2]),
         calibration_eps=["cpu"], output_path=sys.argv[3], log_level="ERROR")
"""


def sqnr(want: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(want.astype(np.float64) ** 2)
                               / max(np.sum((want - got).astype(np.float64) ** 2), 1e-30)))


def typing_row(pipeline, path: Path, float_model, held: np.ndarray) -> dict:
    """Lint counts, file checks and output SQNR against the float model on `held` of one
    Q/DQ file."""
    from qdq_onnx.graph.sessions import inference_session

    model = pipeline.load(path).model
    name = model.graph.input[0].name
    want = inference_session(float_model).run(None, {name: held})[0]
    got = inference_session(model).run(None, {name: held})[0]
    report = pipeline.lint(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    chains = sum(n.op_type == "Cast" and producers.get(n.input[0]) is not None
                 and producers[n.input[0]].op_type == "Cast" for n in model.graph.node)
    io = [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)]
    io_float = [v.type.tensor_type.elem_type
                for v in (*float_model.graph.input, *float_model.graph.output)]
    row = {"compute_ops": report.precisions, "fp32_compute_ops": report.fp32_compute_ops,
           "fp32_recorded": len(report.kept_fp32), "findings": len(report.findings),
           "io_types_kept": io == io_float, "cast_chains": int(chains),
           "sqnr_db": sqnr(want, got), "summary": report.summary()}
    if NEWEST.exists():
        res = subprocess.run([str(NEWEST), "-c", _NEWEST_CHECK, str(path)],
                             capture_output=True, text=True)
        row["newest"] = res.stdout.strip() if res.returncode == 0 else \
            f"FAILED: {res.stderr.strip().splitlines()[-1]}"
    return row


def modelopt_file(python: str, src: Path, calib: np.ndarray, out: Path, mode: str) -> Path | None:
    np.save(CACHE / "calib.npy", calib)
    res = subprocess.run([python, "-c", _MODELOPT, str(src), str(CACHE / "calib.npy"), str(out),
                          mode], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"modelopt failed on {src.name}: {res.stderr[-300:]}", file=sys.stderr)
        return None
    return out


def transformer_onnx(keras, epochs: int) -> tuple[Path, dict]:
    """The transformer benchmark's encoder trained `epochs` on MNIST, as float ONNX."""
    from bench_transformer import build

    from qdq_onnx import pipeline
    from qdq_onnx.data.datasets import load_mnist

    data = load_mnist()
    path = CACHE / f"vit_tiny_e{epochs}.onnx"
    model = build(keras)
    if epochs:
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(*data["train"], batch_size=64, epochs=epochs, verbose=0)
    pipeline.save(pipeline.convert(model), path, check="the float model")
    return path, data


def typing_table(args, pipeline, quantize_model) -> dict:
    import keras

    out: dict[str, dict] = {}
    sources = {name: keras_application_onnx(name) for name in APPS}
    sources["vit_tiny"], _ = transformer_onnx(keras, 0)
    for name, src in sources.items():
        float_model = pipeline.load(src).model
        shape = [d.dim_value or 1 for d in float_model.graph.input[0].type.tensor_type.shape.dim]
        calib = np.random.default_rng(0).random((args.calib, *shape[1:]), dtype=np.float32)
        held = np.random.default_rng(1).random((2, *shape[1:]), dtype=np.float32)
        q = quantize_model(float_model, calibration_data=calib)
        ours, bare = CACHE / f"{name}_typed.onnx", CACHE / f"{name}_typed_unguarded.onnx"
        q.save(ours)
        q.save(bare, range_guard=False)
        out[name] = {"qdq-onnx": typing_row(pipeline, ours, float_model, held),
                     "qdq-onnx --no-range-guard": typing_row(pipeline, bare, float_model, held)}
        if args.modelopt_python:
            from bench_lint import with_static_batch

            static = with_static_batch(src, CACHE / f"{name}_b1.onnx")
            mo = modelopt_file(args.modelopt_python, static, calib[:1],
                               CACHE / f"{name}_modelopt.onnx", "int8")
            if mo is not None:
                out[name]["modelopt"] = typing_row(pipeline, mo, pipeline.load(static).model,
                                                   held[:1])
        for tool, row in out[name].items():
            print(f"{name:15} {tool:9} {row['summary']}; SQNR {row['sqnr_db']:.1f} dB; I/O kept "
                  f"{row['io_types_kept']}; Cast chains {row['cast_chains']}; newest: "
                  f"{row.get('newest', '-')}")
    return out


def accuracy_rows(model, calib, x, y, train, quantize_model, pipeline, qat: dict) -> dict:
    """Accuracy of one float classifier in every precision, and FP8 QAT vs its control."""
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    rows = {"fp32": onnx_accuracy(model, x, y)}
    for dtype in ("int8", "fp8"):
        q = quantize_model(model, calibration_data=calib, dtype=dtype)
        rows[f"{dtype}_fp32_remainder"] = onnx_accuracy(q.export("fp32"), x, y)
        rows[f"{dtype}_fp16_remainder"] = onnx_accuracy(q.export("fp16"), x, y)
    if qat:
        q = quantize_model(model, calibration_data=calib, dtype="fp8")
        q.compile(learning_rate=qat["lr"], schedule="cosine")
        n = qat["steps"] * 64  # the samples the control trains on, in one epoch
        q.fit(train[0][:n], train[1][:n], batch_size=64, epochs=1, verbose=0)
        rows["fp8_qat_fp16_remainder"] = onnx_accuracy(q.export("fp16"), x, y)
        rows["fp32_control"] = qat["control"]()
    return rows


def keras_control(keras, model, train, lr: float, steps: int, x, y) -> float:
    """The float model trained for the same steps and schedule as QAT, as ONNX."""
    from bench_common import compile_cosine

    from qdq_onnx import pipeline
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    compile_cosine(keras, model, lr, steps)
    model.fit(train[0][:steps * 64], train[1][:steps * 64], batch_size=64, epochs=1, verbose=0)
    return onnx_accuracy(pipeline.convert(model), x, y)


def accuracy_tables(args, pipeline, quantize_model) -> dict:
    import keras

    out = {}
    mnist = ROOT / "out" / "mnist"
    if not (mnist / "fp32.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_mnist.py")], check=True)
    with np.load(mnist / "test.npz") as z:
        x, y = z["image"], z["labels"]
    with np.load(mnist / "train.npz") as z:
        train = (z["image"], z["labels"])
    with np.load(mnist / "calib.npz") as z:
        calib = z[z.files[0]]
    steps = args.qat_steps
    qat = {"lr": 1e-4, "steps": steps, "control": lambda: keras_control(
        keras, keras.models.load_model(mnist / "mnist_cnn.keras"), train, 1e-4, steps, x, y)}
    out["mnist_cnn"] = accuracy_rows(pipeline.load(mnist / "fp32.onnx").model, calib, x, y,
                                     train, quantize_model, pipeline, qat)
    vit_path, data = transformer_onnx(keras, args.transformer_epochs)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    out["vit_tiny"] = accuracy_rows(pipeline.load(vit_path).model, xtr[:512], xte, yte,
                                    (xtr, ytr), quantize_model, pipeline, {})
    for name, rows in out.items():
        for k, v in rows.items():
            print(f"{name:10} {k:24} {v * 100:6.2f}%  ({(v - rows['fp32']) * 100:+.2f} vs FP32)")
    return out


def sqnr_table(pipeline, quantize_model) -> dict:
    """ResNet50 (random weights): output SQNR against FP32 on 8 held-out random images."""
    from qdq_onnx.graph.sessions import inference_session

    model = pipeline.load(keras_application_onnx("ResNet50")).model
    rng = np.random.default_rng(1)
    calib, held = rng.random((8, 224, 224, 3), np.float32), rng.random((8, 224, 224, 3),
                                                                        np.float32)
    name = model.graph.input[0].name
    want = inference_session(model).run(None, {name: held})[0]
    out = {}
    for dtype in ("int8", "fp8"):
        q = quantize_model(model, calibration_data=calib, dtype=dtype)
        for rem in ("fp32", "fp16"):
            got = inference_session(q.export(rem)).run(None, {name: held})[0]
            key = f"{dtype}_{rem}_remainder"
            out[key] = sqnr(want, got)
            print(f"ResNet50 {key}: SQNR {out[key]:.1f} dB")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modelopt-python", help="a Python with nvidia-modelopt installed")
    ap.add_argument("--calib", type=int, default=8, help="random calibration images")
    ap.add_argument("--transformer-epochs", type=int, default=2)
    ap.add_argument("--qat-steps", type=int, default=300)
    ap.add_argument("--skip", choices=("typing", "accuracy"), action="append", default=[])
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).parent))
    from qdq_onnx import pipeline, quantize_model

    previous = ROOT / "bench" / "results" / "strong_typing.json"
    result = {}
    if args.skip and previous.exists():  # a skipped part keeps its last measured figures
        import json

        result = {k: v for k, v in json.loads(previous.read_text()).items()
                  if k not in ("date", "machine", "versions")}
    if "typing" not in args.skip:
        result["typing"] = typing_table(args, pipeline, quantize_model)
    if "accuracy" not in args.skip:
        result["accuracy"] = accuracy_tables(args, pipeline, quantize_model)
        result["resnet50_sqnr_db"] = sqnr_table(pipeline, quantize_model)
    print(f"wrote {write_result('strong_typing', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
