"""Benchmark: data-parallel QAT with 1 and 2 MPI ranks on this machine, side by side.

Throughput (the batch per rank fixed, so 2 ranks train twice the samples per step), for
1 rank (onnxruntime's threads on every core), 1 rank with one compute thread (the share
of the machine each of 2 ranks gets) and 2 ranks: the MNIST CNN (out/mnist, from
scripts/train_mnist.py) and ResNet50 (random weights, 224x224x3),
each side in fresh processes under `mpiexec -n N`, one warm-up step then `--steps` timed
steps: seconds per step, samples per second, and per step the time in `GradientSync.reduce`
(gradients copied out of onnxruntime, allreduced, written back) and inside MPI collectives
(the transfer plus waiting for the slower rank). On 2 cores two ranks share the cores that
one rank uses alone, so 2 ranks cannot beat 1 on compute here: this measures the overhead.

Accuracy (`--accuracy`): `qdq-onnx finetune` on the MNIST CNN for one epoch of 25,000
images, 1 rank at batch 64 against `--workers 2` at batch 32 (the same global batch), test
accuracy of each emitted file.

    .venv/bin/python scripts/bench_distributed.py [--steps 5] [--models mnist resnet50]
        [--accuracy]

Writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench_common import ROOT, keras_application_onnx, write_result

BATCH = {"mnist": 64, "resnet50": 8}  # per rank


def _model_and_data(name: str, n: int):
    import numpy as np
    import onnx

    from qdq_onnx import quantize_model

    rng = np.random.default_rng(0)
    if name == "resnet50":
        fp32 = onnx.load(str(keras_application_onnx("ResNet50")))
        x = rng.random((n, 224, 224, 3), dtype=np.float32) * 255
        y = rng.integers(0, 1000, n)
        calib = x[:8]
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        from train_mnist import load_outputs

        files = load_outputs(ROOT / "out" / "mnist", samples=n)
        fp32, calib, (x, y) = files["fp32"], files["calib"][:256], files["train"]
    return quantize_model(fp32, calibration_data=calib).onnx, x, y


def rank(name: str, steps: int) -> dict | None:
    """One rank of a side: seconds per timed step and the synchronisation times."""
    from qdq_onnx import pipeline
    from qdq_onnx.parallel import world
    from qdq_onnx.pipeline.training import Training

    world = world()
    batch = BATCH[name]
    model, x, y = _model_and_data(name, batch * world.size * (steps + 1))
    session = Training(model, pipeline.TrainConfig(learning_rate=1e-5))
    session.fit(x, y, pipeline.FitConfig(batch_size=batch, steps_per_epoch=1, verbose=0))
    trainer, waited = session._trainer, world.waited_s
    started = time.perf_counter()
    session.fit(x, y, pipeline.FitConfig(batch_size=batch, steps_per_epoch=steps, verbose=0))
    seconds = time.perf_counter() - started
    synced = trainer.sync_seconds
    params = sum(int(trainer.backend.get_parameter(n).size) for n in trainer.graph.trainable)
    session.close()
    if not world.is_root:
        return None
    return {"ranks": world.size, "batch_per_rank": batch, "s_per_step": seconds / steps,
            "samples_per_s": batch * world.size * steps / seconds,
            "sync_s_per_step": synced / steps,
            "collective_s_per_step": (world.waited_s - waited) / steps,
            "gradient_mb": params * 4 / 1e6}


# (ranks, compute threads per rank; 0: onnxruntime's default, all cores)
SIDES = {"1": (1, 0), "1x1thread": (1, 1), "2": (2, 0)}


def _side(name: str, ranks: int, threads: int, steps: int) -> dict:
    import os

    from qdq_onnx.parallel.launch import mpiexec

    command = [sys.executable, __file__, "--rank", name, "--steps", str(steps)]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks), *command]
    env = {**os.environ, **({"QDQ_ONNX_THREADS": str(threads)} if threads else {})}
    res = subprocess.run(command, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{name} with {ranks} rank(s) failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def accuracy() -> dict:
    """Test accuracy after one QAT epoch: 1 rank x 64 against 2 ranks x 32 (CLI)."""
    import numpy as np

    from qdq_onnx import quantize_model
    from qdq_onnx.diagnostics.metrics import onnx_accuracy

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_mnist import load_outputs

    folder = ROOT / "bench" / "tmp" / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    files = load_outputs(ROOT / "out" / "mnist", samples=25000)
    import onnx

    src = folder / "ptq.onnx"
    onnx.save(quantize_model(files["fp32"], calibration_data=files["calib"]).onnx, src)
    x, y = files["train"]
    name = files["fp32"].graph.input[0].name
    np.savez(folder / "train.npz", **{name: x, "labels": y})
    xt, yt = files["test"]
    out = {"PTQ": onnx_accuracy(onnx.load(src), xt, yt)}
    for ranks, batch in ((1, 64), (2, 32)):
        path = folder / f"qat_{ranks}x{batch}.onnx"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "qdq_onnx", "finetune", str(src), "--data",
                        str(folder / "train.npz"), "-o", str(path), "--epochs", "1",
                        "--batch-size", str(batch), "--lr", "1e-4", "--workers", str(ranks),
                        "--quiet"], check=True)
        out[f"QAT {ranks} rank(s) x batch {batch}"] = onnx_accuracy(onnx.load(path), xt, yt)
        out[f"seconds {ranks} rank(s)"] = time.perf_counter() - start
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=["mnist", "resnet50"],
                    help="throughput sides to run (none: only --accuracy); the results file "
                         "keeps the parts not rerun")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--rank", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        result = rank(args.rank, args.steps)
        if result is not None:
            print("RESULT " + json.dumps(result))
        return 0
    if "resnet50" in args.models:
        keras_application_onnx("ResNet50")  # converted once, outside the timed processes
    from bench_common import RESULTS

    previous = RESULTS / "distributed.json"
    results: dict = json.loads(previous.read_text()) if previous.exists() else {}
    results.update({"steps": args.steps, "command": " ".join(sys.argv)})
    for name in args.models:
        got = {side: _side(name, *SIDES[side], args.steps) for side in SIDES}
        got["ratio_2_over_1_samples_per_s"] = (got["2"]["samples_per_s"]
                                               / got["1"]["samples_per_s"])
        got["ratio_2_over_1x1thread_samples_per_s"] = (got["2"]["samples_per_s"]
                                                       / got["1x1thread"]["samples_per_s"])
        results[name] = {**got, "command": " ".join(sys.argv)}
        for side in SIDES:
            g = got[side]
            print(f"{name:9} {side:9} rank(s) x {g['batch_per_rank']:3d}: {g['s_per_step']:.3f} "
                  f"s/step, {g['samples_per_s']:.1f} samples/s, sync "
                  f"{g['sync_s_per_step'] * 1e3:.1f} ms/step (collectives "
                  f"{g['collective_s_per_step'] * 1e3:.1f} ms), gradient "
                  f"{g['gradient_mb']:.1f} MB")
    if args.accuracy:
        results["accuracy_mnist"] = {**accuracy(), "command": " ".join(sys.argv)}
        print(json.dumps(results["accuracy_mnist"], indent=1))
    print(f"wrote {write_result('distributed', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
