"""Which learning rate and schedule should fine-tuning a trained model default to? One QAT
epoch (batch 64, Adam) from the PTQ model under each candidate, on MNIST CNNs trained to
different degrees, test accuracy against the start; keep-best is off so the raw effect of
the setting shows. Writes bench/results/finetune_defaults.json.

    .venv/bin/python scripts/bench_finetune_defaults.py [--models out/mnist out/mnist-gap-c4]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from bench_common import write_result

CANDIDATES = [(1e-3, "constant"), (1e-4, "constant"), (1e-4, "cosine"), (3e-5, "cosine"),
              (1e-5, "cosine")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["out/mnist", "out/mnist-gap-c4"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from train_mnist import load_outputs

    from qdq_onnx import quantize_model
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    results = {}
    for d in args.models:
        files = load_outputs(Path(d))
        (x, y), (xt, yt) = files["train"], files["test"]
        ptq = quantize_model(files["fp32"], calibration_data=files["calib"])
        rows = {"fp32": onnx_accuracy(files["fp32"], xt, yt),
                "ptq": onnx_accuracy(ptq.onnx, xt, yt)}
        for lr, schedule in CANDIDATES:
            q = quantize_model(files["fp32"], calibration_data=files["calib"])
            q.compile(learning_rate=lr, schedule=schedule)
            q.fit(x, y, batch_size=64, epochs=1, verbose=0, keep_best=False)
            rows[f"{lr:g} {schedule}"] = onnx_accuracy(q.export(), xt, yt)
        results[d] = rows
        print(d, " | ".join(f"{k} {v * 100:.2f}" for k, v in rows.items()), flush=True)
    print(f"wrote {write_result('finetune_defaults', {'results': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
