"""Soak: resident memory stays flat over a long fine-tuning run and bounded over a long
calibration. Writes bench/results/soak.json.

    .venv/bin/python scripts/soak.py [--steps 10000] [--samples 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import write_result
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def small_cnn(channels: int = 8):
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.normal(0, .3, (channels, 1, 3, 3)).astype("f"), "w1"),
             numpy_helper.from_array(r.normal(0, .3, (channels * 64, 10)).astype("f"), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w2"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "soak", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 1, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=100_000)
    args = ap.parse_args()
    from qdq_onnx import pipeline, quantize_model
    from qdq_onnx.pipeline.training import Training
    from qdq_onnx.quantize.calibration import collect_stats

    rng = np.random.default_rng(1)
    model = small_cnn()
    x = rng.random((512, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    q = quantize_model(model, calibration_data=x)
    # Training: batches of 32 over 512 samples = 16 steps per epoch.
    session = Training(q.onnx, pipeline.TrainConfig(learning_rate=1e-3))
    epoch = pipeline.FitConfig(batch_size=32, verbose=0)
    samples = []
    epochs = args.steps // 16
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        session.fit(x, y, epoch)
        if e % max(1, epochs // 20) == 0:
            samples.append((session.steps, rss_mib()))
    train_s = time.perf_counter() - t0
    session.close()
    warm = samples[1][1]  # after the first measurement window
    growth = (samples[-1][1] - warm) / warm
    # Calibration: stream `samples` images in batches of 1000 (histogram methods).
    def batches(total):
        for i in range(0, total, 1000):
            yield {"x": rng.random((min(1000, total - i), 1, 8, 8), dtype=np.float32)}

    cal = {}
    for total in (10_000, args.samples, 3 * args.samples):
        before = rss_mib()
        t = time.perf_counter()
        collect_stats(q.float_model, ["x", "r", "f"], batches(total),
                      pipeline.CalibrationConfig(show_progress=False), with_hist=True)
        cal[total] = {"rss_before_mib": before, "rss_after_mib": rss_mib(),
                      "seconds": time.perf_counter() - t}
    write_result("soak", {"training": {"steps": session.steps, "seconds": train_s,
                                       "rss_mib_by_step": samples,
                                       "growth_after_warmup": growth},
                          "calibration": cal})
    print(f"training: {session.steps} steps in {train_s:.0f} s; RSS {samples[0][1]:.0f} -> "
          f"{samples[-1][1]:.0f} MiB, growth after warm-up {growth * 100:+.2f}% (target < 5%)")
    for total, c in cal.items():
        print(f"calibration over {total:,} samples: RSS {c['rss_before_mib']:.0f} -> "
              f"{c['rss_after_mib']:.0f} MiB in {c['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
