"""Streaming data: peak RSS of a 50-step `qdq-onnx finetune` over a ~2 GB memory-mapped
folder (MNIST images repeated) against the same run over a 30 MB folder, each in its own
process, and the folder's read throughput against the training step rate; and the same
for a Python generator of that many samples given to `fit` (spilled to disk). Writes
bench/results/streaming.json.

    .venv/bin/python scripts/bench_streaming.py [--big-gb 2.0] [--steps 50]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from bench_common import CACHE, write_result

SAMPLE_BYTES = 28 * 28 * 4


def make_folder(path: Path, n: int, x: np.ndarray, y: np.ndarray) -> Path:
    """`n` samples (the MNIST images repeated) written chunk by chunk, never all in RAM."""
    path.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(path / "image.npy", mode="w+", dtype=np.float32,
                                       shape=(n, 28, 28, 1))
    labels = np.lib.format.open_memmap(path / "labels.npy", mode="w+", dtype=np.int64,
                                       shape=(n,))
    for start in range(0, n, len(x)):
        stop = min(start + len(x), n)
        images[start:stop] = x[:stop - start]
        labels[start:stop] = y[:stop - start]
    images.flush()
    labels.flush()
    del images, labels
    return path


def finetune_rss(model: Path, folder: Path, steps: int) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of one `qdq-onnx finetune` process."""
    cli = str(Path(sys.executable).parent / "qdq-onnx")
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", cli, "finetune", str(model), "--data",
                          str(folder), "-o", str(folder / "ft.onnx"), "--epochs", "1",
                          "--steps-per-epoch", str(steps), "--batch-size", "32", "--quiet"],
                         capture_output=True, text=True, check=True)
    return int(res.stderr.strip().splitlines()[-1]) / 1024.0, time.perf_counter() - t


GENERATOR_RUN = """
import sys, numpy as np, onnx
from qdq_onnx import pipeline
model, folder, n, steps = onnx.load(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x, y = np.load(folder + "/image.npy"), np.load(folder + "/labels.npy")
def batches():  # the small folder repeated up to n samples, never more than 1024 in RAM
    for s in range(0, n, 1024):
        i = np.arange(s, min(s + 1024, n)) % len(x)
        yield x[i], y[i]
pipeline.finetune(model, batches(), fit=pipeline.FitConfig(steps_per_epoch=steps, verbose=0))
"""


def generator_rss(model: Path, small: Path, n: int, steps: int) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of `pipeline.finetune` on a generator of `n` samples, which
    is spilled to temporary files first, in its own process."""
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", GENERATOR_RUN,
                          str(model), str(small), str(n), str(steps)],
                         capture_output=True, text=True, check=True)
    return int(res.stderr.strip().splitlines()[-1]) / 1024.0, time.perf_counter() - t


def read_rate(folder: Path, model, batches: int = 200) -> float:
    """Samples per second read from the folder as training reads it (shuffled batches)."""
    from qdq_onnx.data.feeds import load_labelled

    x, _ = load_labelled(folder, model)
    feed = next(iter(x.values()))
    order = np.random.default_rng(0).permutation(len(feed))
    t = time.perf_counter()
    for b in range(batches):
        feed[order[b * 32:(b + 1) * 32]]
    return batches * 32 / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from train_mnist import load_outputs

    from qdq_onnx import pipeline, quantize_model

    files = load_outputs(Path("out/mnist"))
    x, y = files["train"]
    root = CACHE / "streaming"
    shutil.rmtree(root, ignore_errors=True)
    model_path = root / "calibrated.onnx"
    root.mkdir(parents=True)
    q = quantize_model(files["fp32"], calibration_data=files["calib"])
    pipeline.save(q.onnx, model_path, check="the model")
    big_n = int(args.big_gb * 1e9 / SAMPLE_BYTES)
    small = make_folder(root / "small", int(30e6 / SAMPLE_BYTES), x, y)
    t = time.perf_counter()
    big = make_folder(root / "big", big_n, x, y)
    write_s = time.perf_counter() - t
    sizes = {k: sum(f.stat().st_size for f in d.glob("*.npy")) / 2**20
             for k, d in (("small", small), ("big", big))}
    runs = {k: finetune_rss(model_path, d, args.steps) for k, d in (("small", small),
                                                                       ("big", big))}
    ratio = runs["big"][0] / runs["small"][0]
    n_small = int(30e6 / SAMPLE_BYTES)
    gen = {"small": generator_rss(model_path, small, n_small, args.steps),
           "big": generator_rss(model_path, small, big_n, args.steps)}
    gen_ratio = gen["big"][0] / gen["small"][0]
    rates = {k: read_rate(d, q.onnx) for k, d in (("small", small), ("big", big))}
    step_rate = args.steps * 32 / runs["small"][1]
    for k in ("small", "big"):
        print(f"{k:5} folder {sizes[k]:8.0f} MiB: finetune {args.steps} steps peak RSS "
              f"{runs[k][0]:6.0f} MiB ({runs[k][1]:.1f} s); shuffled reads {rates[k]:,.0f} "
              "samples/s")
    print(f"peak RSS big / small = {ratio:.2f} (target <= 1.3); training consumes about "
          f"{step_rate:,.0f} samples/s including start-up (writing the big folder took "
          f"{write_s:.0f} s)")
    print(f"generator of {big_n:,} vs {n_small:,} samples (spilled to disk, then trained): "
          f"peak RSS {gen['big'][0]:.0f} vs {gen['small'][0]:.0f} MiB = {gen_ratio:.2f}; "
          f"{gen['big'][1]:.0f} s vs {gen['small'][1]:.0f} s including the spill")
    out = write_result("streaming", {
        "generator_samples": {"small": n_small, "big": big_n},
        "generator_peak_rss_mib": {k: v[0] for k, v in gen.items()},
        "generator_seconds": {k: v[1] for k, v in gen.items()},
        "generator_peak_rss_ratio": gen_ratio,
        "folder_mib": sizes, "steps": args.steps, "batch_size": 32,
        "peak_rss_mib": {k: v[0] for k, v in runs.items()},
        "seconds": {k: v[1] for k, v in runs.items()}, "peak_rss_ratio": ratio,
        "read_samples_per_s": rates, "train_samples_per_s_with_startup": step_rate})
    shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
