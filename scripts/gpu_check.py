"""The torch backend on a CUDA GPU (run by scripts/gpu_check.sh on a lent GPU machine):

1. parity: two Adam steps of the fake-quant digits MLP on the GPU against the CPU, from
   the same weights and batch (loss, whole-gradient and per-tensor differences);
2. speed: seconds per ResNet50 QAT step (scripts/resnet50_onnx.py, batch 64) on the GPU
   and on the CPU, after warm-up steps;
3. accuracy: one QAT epoch of the MNIST CNN on the GPU (defaults, batch 64), test accuracy
   of the emitted file (FP32 remainder, onnxruntime CPU) beside the file before it.

    python3 scripts/gpu_check.py --carry out/gpu_carry --out out/gpu_check [--device cpu]

`--device cpu` runs the same script without a GPU (how it is tested here). Writes
OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


def _digits_mlp():
    """The tests' digits MLP (3 hidden ReLU layers of 16) fitted by scikit-learn."""
    import warnings

    from helpers import mlp
    from onnx import numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((16, 16, 16), max_iter=200, random_state=1).fit(x, y)
    model = mlp()
    values = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        values[f"w{i}"], values[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(values[t.name], t.name))
    return model, x, y


def _two_steps(q, x, y, device: str):
    from qdq_onnx.finetune import TrainConfig, Trainer

    t = Trainer(q, TrainConfig(backend="torch", device=device, learning_rate=1e-3))
    feeds, targets = t._labelled(x, y, "parity")
    args = t.args(feeds, slice(0, len(x)), targets)
    out = []
    for _ in range(2):
        loss, _ = t.backend.forward_backward(args)
        names = list(t.graph.trainable)
        out.append((loss, dict(zip(names, [np.array(g) for g in t.backend.gradients(names)]))))
        t.backend.step(1e-3)
        t.refresh_weight_scales()
    t.close()
    return out


def parity(device: str) -> dict:
    from qdq_onnx import quantize_model

    model, x, y = _digits_mlp()
    q = quantize_model(model, calibration_data=x[:64]).onnx
    a, b = _two_steps(q, x[:64], y[:64], "cpu"), _two_steps(q, x[:64], y[:64], device)
    rows = []
    for k, ((la, ga), (lb, gb)) in enumerate(zip(a, b), 1):
        va = np.concatenate([g.ravel() for g in ga.values()])
        vb = np.concatenate([gb[n].ravel() for n in ga])
        rows.append({"step": k, "loss_cpu": la, "loss_device": lb,
                     "loss_relative": abs(la - lb) / abs(la),
                     "gradient_relative_l2": float(np.linalg.norm(va - vb) / np.linalg.norm(va)),
                     "tensor_max_relative": max(float(np.abs(ga[n] - gb[n]).max()
                                                      / max(np.abs(ga[n]).max(), 1e-30))
                                                for n in ga)})
    return {"model": "digits MLP (tests/helpers.py), fake-quant INT8, Adam lr 1e-3",
            "steps": rows}


def resnet_speed(device: str, batch: int, steps: int) -> dict:
    from resnet50_onnx import resnet50

    from qdq_onnx import pipeline
    from qdq_onnx.finetune import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    x = rng.random((batch, 3, 224, 224), dtype=np.float32)
    y = rng.integers(0, 1000, batch)
    q = pipeline.insert(resnet50(), calibration=pipeline.CalibrationConfig(method="max"),
                        data={"input": x[:8]},
                        guard=pipeline.AccuracyGuardConfig(enabled=False)).qdq
    out = {}
    sides = [(device, steps)] + ([("cpu", 2)] if device != "cpu" else [])
    for where, n in sides:
        t = Trainer(q, TrainConfig(backend="torch", device=where, learning_rate=1e-5))
        feeds, targets = t._labelled(x, y, "speed")
        args = t.args(feeds, slice(0, batch), targets)
        times = []
        for i in range(n + 2):  # two warm-up steps (cuDNN picks its algorithms)
            start = time.perf_counter()
            t.backend.forward_backward(args)
            t.backend.step(1e-5)
            t.refresh_weight_scales()
            if i >= 2:
                times.append(time.perf_counter() - start)
        t.close()
        out[where] = {"s_per_step": float(np.median(times)), "steps_per_s":
                      1.0 / float(np.median(times)), "timed_steps": n}
    if device != "cpu":
        out["device_over_cpu_speedup"] = out["cpu"]["s_per_step"] / out[device]["s_per_step"]
    return {"batch": batch, **out}


def _accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 1000]})[0].argmax(-1)
                           for i in range(0, len(x), 1000)])
    return float(np.mean(pred == y))


def mnist_epoch(carry: Path, device: str) -> dict:
    from qdq_onnx import pipeline
    from qdq_onnx.finetune import FitConfig, TrainConfig

    with np.load(carry / "mnist.npz") as z:
        data = {k: z[k] for k in z.files}
    xtr = (data["x_train"].astype(np.float32) / 255)
    xte = (data["x_test"].astype(np.float32) / 255)
    ytr, yte = data["y_train"].astype(np.int64), data["y_test"].astype(np.int64)
    q = pipeline.insert(onnx.load(str(carry / "mnist_cnn.onnx")), data=xtr[:512]).qdq
    start = time.perf_counter()
    tuned = pipeline.finetune(q, xtr, ytr, TrainConfig(backend="torch", device=device),
                              FitConfig(epochs=1, batch_size=64, verbose=0))
    seconds = time.perf_counter() - start
    return {"ptq_accuracy": _accuracy(q, xte, yte),
            "qat_accuracy": _accuracy(tuned.model, xte, yte),
            "epoch_seconds": seconds, "steps": tuned.history.steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--carry", default=str(ROOT / "out" / "gpu_carry"))
    ap.add_argument("--out", default=str(ROOT / "out" / "gpu_check"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    import torch

    result = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
              "torch": torch.__version__, "onnx": onnx.__version__,
              "device": torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu"}
    for name, run in (("parity", lambda: parity(args.device)),
                      ("mnist_epoch", lambda: mnist_epoch(Path(args.carry), args.device)),
                      ("resnet50", lambda: resnet_speed(args.device, args.batch, args.steps))):
        start = time.perf_counter()
        result[name] = run()
        result[name]["seconds"] = time.perf_counter() - start
        print(name, json.dumps(result[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
