"""The two training backends side by side on this machine: onnxruntime-training and torch
(PyTorch autograd on the same fake-quant training graph).

1. Step time: seconds per QAT step (after one warm-up step) of the MNIST CNN
   (scripts/train_mnist.py) and ResNet50 (scripts/resnet50_onnx.py, 224x224, random
   weights: speed does not depend on them), each side in its own fresh process, one after
   the other, and its peak memory.
2. Parity: two steps from the same weights and batch (the fake-quant digits MLP; the float
   training graph of each real pretrained file both train), loss and gradient differences.
3. One QAT epoch of the MNIST CNN with the command line (`qdq-onnx finetune --backend B`,
   defaults otherwise, FP32 remainder so onnxruntime 1.19 evaluates it exactly), then
   test accuracy of each emitted file, beside the Q/DQ file before fine-tuning.

    .venv/bin/python scripts/bench_backends.py [--steps 3] [--resnet-batch 8 32] [--device cpu]

Writes bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_common import CACHE, ROOT, write_result

BACKENDS = ("onnxruntime", "torch")
MNIST = ROOT / "out" / "bench" / "mnist"


def mnist_files() -> Path:
    if not (MNIST / "fp32.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--out",
                        str(MNIST), "--cosine"], check=True)
    return MNIST


def _qdq(model_path: Path, calib: dict, out: Path) -> Path:
    """The model with Q/DQ by the default rules, max-calibrated on `calib`."""
    import onnx

    from qdq_onnx import pipeline

    if not out.exists():
        inserted = pipeline.insert(onnx.load(str(model_path)),
                                   calibration=pipeline.CalibrationConfig(method="max"),
                                   data=calib, guard=pipeline.AccuracyGuardConfig(enabled=False))
        onnx.save(inserted.qdq, str(out))
    return out


def step_side(backend: str, model: str, batch: int, steps: int, device: str) -> dict:
    """Run in a fresh process: seconds per step and peak RSS of one backend."""
    import numpy as np
    import onnx

    from qdq_onnx.finetune import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    if model == "mnist_cnn":
        with np.load(MNIST / "train.npz") as z:
            x, y = z["image"][:batch], z["labels"][:batch]
        q = onnx.load(str(_qdq(MNIST / "fp32.onnx", {"image": x}, CACHE / "mnist_q.onnx")))
    else:
        x = rng.random((batch, 3, 224, 224), dtype=np.float32)
        y = rng.integers(0, 1000, batch)
        src = CACHE / "resnet50.onnx"
        if not src.exists():
            sys.path.insert(0, str(ROOT / "scripts"))
            from resnet50_onnx import resnet50

            onnx.save(resnet50(), str(src))
        q = onnx.load(str(_qdq(src, {"input": x[:8]}, CACHE / "resnet50_q.onnx")))
    t = Trainer(q, TrainConfig(backend=backend, device=device, learning_rate=1e-5))
    feeds, targets = t._labelled(x, y, "bench")
    args = t.args(feeds, slice(0, batch), targets)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        t.backend.forward_backward(args)
        t.backend.step(1e-5)
        t.refresh_weight_scales()
        if i:
            times.append(time.perf_counter() - start)
    t.close()
    return {"s_per_step": float(np.median(times)), "steps": steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_child(*args) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'scripts')!r}); "
            f"import bench_backends as b; print(json.dumps(b.step_side(*{list(args)!r})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _accuracy(path: Path) -> float:
    import numpy as np
    import onnxruntime as ort

    with np.load(MNIST / "test.npz") as z:
        x, y = z["image"], z["labels"]
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 1000]})[0].argmax(-1)
                           for i in range(0, len(x), 1000)])
    return float(np.mean(pred == y))


def epoch_accuracy(device: str) -> dict:
    """One fine-tuning epoch of the MNIST CNN per backend, by the command line."""
    out = CACHE / "backends"
    out.mkdir(parents=True, exist_ok=True)
    q = out / "mnist_q.onnx"
    cli = [sys.executable, "-m", "qdq_onnx"]
    subprocess.run([*cli, "insert", str(MNIST / "fp32.onnx"), "--calib",
                    str(MNIST / "calib.npz"), "-o", str(q), "--high-precision", "fp32",
                    ], check=True, capture_output=True)
    result = {"ptq": {"accuracy": _accuracy(q)}}
    for backend in BACKENDS:
        tuned = out / f"mnist_{backend}.onnx"
        start = time.perf_counter()
        run = subprocess.run([*cli, "finetune", str(q), "--data", str(MNIST / "train.npz"),
                              "--epochs", "1", "--backend", backend, "--device", device,
                              "--high-precision", "fp32", "--quiet",
                              "-o", str(tuned)], check=True, capture_output=True, text=True)
        result[backend] = {"accuracy": _accuracy(tuned),
                           "seconds": time.perf_counter() - start,
                           "finetune_says": run.stdout.strip().splitlines()[-1]}
    result["difference_pt"] = 100 * abs(result["torch"]["accuracy"]
                                        - result["onnxruntime"]["accuracy"])
    return result


def parity() -> dict:
    """Two steps from the same weights and batch on both backends (tests/torch_parity.py):
    the fake-quant digits MLP (Adam), and the float training graph of every real pretrained
    file both backends train, distilled towards its Q/DQ model (SGD)."""
    import onnx

    sys.path.insert(0, str(ROOT / "tests"))
    from gpu_check import _digits_mlp
    from real_pool import POOL
    from torch_parity import differences, two_steps

    from qdq_onnx import pipeline, quantize_model

    def row(a, b) -> dict:
        return dict(zip(("loss_relative", "gradient_relative_l2", "tensor_max_relative"),
                        differences(a, b)))

    model, x, y = _digits_mlp()
    q = quantize_model(model, calibration_data=x[:64]).onnx
    config = {"learning_rate": 1e-3, "optimizer": "adamw"}
    out = {"digits_mlp_fake_quant": row(*(two_steps(q, x[:64], y[:64], b, config)
                                          for b in BACKENDS))}
    config = {"distill": True, "learning_rate": 1e-4, "optimizer": "sgd"}
    for m in POOL:
        if m.name in ("magika", "basic_pitch"):  # onnxruntime-training cannot train them
            continue
        inserted = pipeline.insert(onnx.load(str(m.path())), data=m.inputs(8))
        feeds = m.inputs(1 if m.name in ("yolox_ddddocr", "picodet_layout") else 4)
        out[f"{m.name}_float"] = row(*(two_steps(inserted.float_model, feeds, None, b, config,
                                                 teacher=inserted.qdq) for b in BACKENDS))
        print(m.name, json.dumps(out[f"{m.name}_float"]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side")
    ap.add_argument("--mnist-batch", type=int, nargs="+", default=[64])
    ap.add_argument("--resnet-batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--device", default="cpu", help="the torch backend's device")
    ap.add_argument("--skip-epoch", action="store_true", help="no MNIST epoch")
    ap.add_argument("--skip-parity", action="store_true", help="no two-step comparisons")
    ap.add_argument("--parity-only", action="store_true",
                    help="only the two-step comparisons (into the existing results file)")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.parity_only:
        path = ROOT / "bench" / "results" / "backends.json"
        result = json.loads(path.read_text())
        result["parity"] = parity()
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(path)
        return 0
    mnist_files()
    steps: dict = {}
    for model, batches in (("mnist_cnn", args.mnist_batch), ("resnet50", args.resnet_batch)):
        for batch in batches:
            row = {b: _in_child(b, model, batch, args.steps,
                                args.device if b == "torch" else "cpu") for b in BACKENDS}
            row["torch_over_onnxruntime"] = (row["torch"]["s_per_step"]
                                             / row["onnxruntime"]["s_per_step"])
            steps[f"{model}@{batch}"] = row
            print(model, batch, json.dumps(row), flush=True)
    result = {"device": args.device, "steps": steps,
              "isolation": "one fresh process per side, run one after the other",
              "models": {"mnist_cnn": "scripts/train_mnist.py --cosine (out/bench/mnist)",
                         "resnet50": "scripts/resnet50_onnx.py (random weights)"}}
    if not args.skip_parity:
        result["parity"] = parity()
    if not args.skip_epoch:
        result["mnist_epoch"] = epoch_accuracy(args.device)
        print(json.dumps(result["mnist_epoch"]), flush=True)
    print(write_result("backends", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
