"""Benchmark at real size: ResNet50 (25.6M parameters, 224x224x3) fine-tuning steps.

Sides, each in its own fresh process holding only its own framework, run one after the
other (TensorFlow's and onnxruntime's thread pools steal the cores from each other when
they share a process):
- qdq_onnx_qat: qdq-onnx QAT (Q/DQ inserted by the TensorRT rules, max-calibrated) in
  onnxruntime-training;
- ort_float: the same float graph trained in onnxruntime-training without fake-quant;
- tensorflow_qat: the Keras model with Conv2D/Dense wrapped the way NVIDIA's Keras toolkit
  does (`bench_finetune.tf_qat_model`);
- qdq_onnx_qat_images (batch 8 only): qdq-onnx QAT reading its batches from an image folder
  (JPEG 256x256, decoded and resized by Pillow, caffe preprocessing), to show whether the
  data pipeline keeps up with training.
Plus the read rates alone (samples/s, shuffled batches of 32) of the image folder and of a
memory-mapped `.npy` folder of 224x224x3 float32 samples, to set against the step rates.

Per side: one warm-up step (building the training graph, tracing), then `--steps` timed
steps; seconds per step and the process's peak RSS. Random images and labels: speed and
memory do not depend on the values.

    .venv/bin/python scripts/bench_resnet50_qat.py [--batch-size 8 32] [--steps 3]

Writes bench/results/resnet50_qat.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_common import CACHE, keras_application_onnx, write_result

SIDES = ("qdq_onnx_qat", "ort_float", "tensorflow_qat")


def _data(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.random((n, 224, 224, 3), dtype=np.float32) * 255, rng.integers(0, 1000, n)


def _keras_file() -> Path:
    path = CACHE / "ResNet50.keras"
    if not path.exists():
        code = ("import keras; keras.utils.set_random_seed(0); "
                f"keras.applications.ResNet50(weights=None).save({str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def image_folder(n: int = 64) -> Path:
    """bench/tmp/images: `n` random 256x256 JPEGs in 4 class folders (made once)."""
    import numpy as np
    from PIL import Image

    root = CACHE / "images"
    if not root.exists():
        rng = np.random.default_rng(0)
        for i in range(n):
            folder = root / f"class_{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
                folder / f"{i:04d}.jpg", quality=90)
    return root


def npy_folder(n: int = 512) -> Path:
    """bench/tmp/npy224: x.npy (n, 224, 224, 3) float32 (308 MB) and labels.npy."""
    import numpy as np

    root = CACHE / "npy224"
    if not root.exists():
        root.mkdir(parents=True)
        x = np.lib.format.open_memmap(root / "x.npy", "w+", np.float32, (n, 224, 224, 3))
        rng = np.random.default_rng(0)
        for start in range(0, n, 64):
            x[start:start + 64] = rng.random((min(64, n - start), 224, 224, 3), np.float32)
        x.flush()
        del x
        np.save(root / "labels.npy", rng.integers(0, 1000, n))
    return root


def _ort_steps(side: str, batch: int, steps: int) -> float:
    """Seconds per training step (after one warm-up step) in onnxruntime-training."""
    import onnx

    from qdq_onnx import ImageFolder, pipeline, quantize_model
    from qdq_onnx.pipeline.training import Training

    fp32 = onnx.load(str(keras_application_onnx("ResNet50")))
    if side == "ort_float":
        model = fp32
    else:
        model = quantize_model(fp32, calibration_data=_data(8, seed=1)[0]).onnx
    session = Training(model, pipeline.TrainConfig(learning_rate=1e-5))
    if side == "qdq_onnx_qat_images":
        x, y = ImageFolder(image_folder(), preprocess="caffe"), None
    else:
        x, y = _data(batch * (steps + 1))
    session.fit(x, y, pipeline.FitConfig(batch_size=batch, steps_per_epoch=1, verbose=0))
    t = time.perf_counter()
    session.fit(x, y, pipeline.FitConfig(batch_size=batch, steps_per_epoch=steps, verbose=0))
    return (time.perf_counter() - t) / steps


def _tf_steps(batch: int, steps: int) -> float:
    import keras
    from bench_finetune import tf_qat_model

    model = tf_qat_model(_keras_file())
    model.compile(keras.optimizers.Adam(1e-5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    x, y = _data(batch * (steps + 1))
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # trace
    t = time.perf_counter()
    model.fit(x[batch:], y[batch:], batch_size=batch, epochs=1, verbose=0)
    return (time.perf_counter() - t) / steps


def _read_rate(kind: str, batch: int = 32) -> float:
    """Samples per second read in shuffled batches: images decoded, resized and normalised
    from the image folder, or rows of the memory-mapped folder (cast and NaN-checked)."""
    import numpy as np

    from qdq_onnx import ImageFolder
    from qdq_onnx.data.feeds import Streamed, load_arrays

    if kind == "images":
        data = load_arrays(ImageFolder(image_folder(), preprocess="caffe"))[""]
        data = data.bind((None, 224, 224, 3), "input")
    else:
        data = Streamed(load_arrays(npy_folder())["x"], np.float32, "x")
    order = np.random.default_rng(0).permutation(len(data))
    t = time.perf_counter()
    for start in range(0, len(data), batch):
        data[np.sort(order[start:start + batch])]
    return len(data) / (time.perf_counter() - t)


def child(side: str, batch: int, steps: int) -> dict:
    if side.startswith("read_rate_"):
        result = {"samples_per_s": _read_rate(side[len("read_rate_"):])}
    elif side == "tensorflow_qat":
        result = {"s_per_step": _tf_steps(batch, steps)}
    else:
        result = {"s_per_step": _ort_steps(side, batch, steps)}
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run(side: str, batch: int, steps: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--side", side, "--batch-size", str(batch),
                          "--steps", str(steps)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{side} at batch {batch} failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print("RESULT " + json.dumps(child(args.side, args.batch_size[0], args.steps)))
        return 0
    keras_application_onnx("ResNet50")  # converted once, outside the timed processes
    _keras_file()
    image_folder()
    npy_folder()
    results: dict = {f"read_rate_{k}": _run(f"read_rate_{k}", 32, args.steps)
                     for k in ("images", "npy")}
    print(f"read rate: image folder {results['read_rate_images']['samples_per_s']:.0f} "
          "samples/s (256x256 JPEG -> 224x224, caffe); memory-mapped folder "
          f"{results['read_rate_npy']['samples_per_s']:.0f} samples/s (224x224x3 float32)")
    for batch in args.batch_size:
        sides = SIDES + (("qdq_onnx_qat_images",) if batch == 8 else ())
        got = {side: _run(side, batch, args.steps) for side in sides}
        got["ratios"] = {
            "qat_over_ort_float": got["qdq_onnx_qat"]["s_per_step"]
            / got["ort_float"]["s_per_step"],
            "tensorflow_qat_over_qdq_onnx_qat": got["tensorflow_qat"]["s_per_step"]
            / got["qdq_onnx_qat"]["s_per_step"]}
        if "qdq_onnx_qat_images" in got:
            got["ratios"]["images_over_arrays"] = (got["qdq_onnx_qat_images"]["s_per_step"]
                                                   / got["qdq_onnx_qat"]["s_per_step"])
        results[str(batch)] = got
        for side in sides:
            r = got[side]
            print(f"batch {batch:3d} {side:20} {r['s_per_step']:7.2f} s/step  "
                  f"peak RSS {r['peak_rss_mib']:7.0f} MiB")
        print(f"batch {batch:3d} ratios: " + ", ".join(
            f"{k} {v:.2f}x" for k, v in got["ratios"].items()))
    write_result("resnet50_qat", {"model": "keras.applications.ResNet50(weights=None), "
                                  "224x224x3, 1000 classes", "steps": args.steps,
                                  "isolation": "one process per side", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
