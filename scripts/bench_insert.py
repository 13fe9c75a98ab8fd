"""Benchmark: load + prepare + plan + insert + save on ResNet50 against plain onnx load+save of
the same file (side by side, alternating, one run); growth over N residual blocks; peak memory
against the model file size. Writes bench/results/insert.json.

    .venv/bin/python scripts/bench_insert.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "tmp"


def resnet50_path() -> Path:
    path = CACHE / "resnet50.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        code = ("import keras; from qdq_onnx.compat.utils import convert_keras_model_to_onnx; "
                f"convert_keras_model_to_onnx(keras.applications.ResNet50(weights=None), "
                f"{str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def plain(src: Path, dst: Path) -> None:
    onnx.save(onnx.load(str(src)), str(dst))


def own_io(src: Path, dst: Path) -> None:
    """qdq-onnx's own load + streaming atomic save, with no planning: isolates the cost of
    placement and insertion."""
    from qdq_onnx.files.onnx_files import load_model, save_model_atomic

    save_model_atomic(load_model(src), dst)


def qdq(src: Path, dst: Path) -> None:
    from qdq_onnx.convert.prepare import prepare_model
    from qdq_onnx.files.onnx_files import load_model, save_model_atomic
    from qdq_onnx.placement.planner import plan_placement
    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.quantize.insert import insert_qdq

    prepared, _ = prepare_model(load_model(src), copy=False)
    plan = plan_placement(prepared, load_rules("tensorrt"))
    out, _ = insert_qdq(prepared, plan, in_place=True)
    save_model_atomic(out, dst)


def residual_stack(n: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = 8
    nodes, inits = [], []
    x = "x"
    for i in range(n):
        for j in (0, 1):
            w = f"b{i}_w{j}"
            inits.append(numpy_helper.from_array(
                rng.normal(0, 0.1, (c, c, 3, 3)).astype(np.float32), w))
            src = x if j == 0 else f"b{i}_r0"
            nodes.append(helper.make_node("Conv", [src, w], [f"b{i}_c{j}"], name=f"b{i}_c{j}",
                                          pads=[1, 1, 1, 1]))
            if j == 0:
                nodes.append(helper.make_node("Relu", [f"b{i}_c0"], [f"b{i}_r0"],
                                              name=f"b{i}_relu0"))
        nodes.append(helper.make_node("Add", [x, f"b{i}_c1"], [f"b{i}_add"], name=f"b{i}_add"))
        nodes.append(helper.make_node("Relu", [f"b{i}_add"], [f"b{i}_out"], name=f"b{i}_out"))
        x = f"b{i}_out"
    graph = helper.make_graph(
        nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def peak_rss_mb(func: str, src: Path, dst: Path) -> float:
    """Peak resident memory the step adds over a process that has imported everything."""
    code = "\n".join([
        "import resource, sys, pathlib",
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
        "import bench_insert as b, qdq_onnx.pipeline, onnx_graphsurgeon",
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        f"b.{func}(pathlib.Path({str(src)!r}), pathlib.Path({str(dst)!r}))",
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    src = resnet50_path()
    size_mb = src.stat().st_size / 2**20
    # Both sides write the same ~100 MB; tmpfs keeps disk-flush noise out of the comparison.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        dst = Path(tmp) / "out.onnx"
        # First, while this process is small: Linux children inherit the parent's peak RSS
        # across exec, which would hide the child's own peak.
        mem = {"plain": peak_rss_mb("plain", src, dst), "qdq": peak_rss_mb("qdq", src, dst)}
        times: dict[str, list[float]] = {"plain": [], "own_io": [], "qdq": []}
        qdq(src, dst)  # warm imports
        for _ in range(args.repeats):
            for name, fn in (("plain", plain), ("own_io", own_io), ("qdq", qdq)):
                t = time.perf_counter()
                fn(src, dst)
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        overhead = (med["qdq"] - med["plain"]) / med["plain"]
        overhead_own = (med["qdq"] - med["own_io"]) / med["own_io"]
    growth = {}
    from qdq_onnx.convert.prepare import prepare_model
    from qdq_onnx.placement.planner import plan_placement
    from qdq_onnx.placement.rules import load_rules
    from qdq_onnx.quantize.insert import insert_qdq

    rules = load_rules("tensorrt")
    for n in (10, 100, 1000):
        model = residual_stack(n)
        t = time.perf_counter()
        prepared, _ = prepare_model(model)
        plan = plan_placement(prepared, rules)
        insert_qdq(prepared, plan)
        growth[n] = time.perf_counter() - t
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores", "python": platform.python_version(),
        "onnx": onnx.__version__, "model": "keras ResNet50 (weights=None), "
        f"{size_mb:.1f} MiB", "repeats": args.repeats,
        "median_s": med, "output_dir": "tmpfs" if shm else "disk",
        "insert_overhead_vs_plain_io": overhead,
        "insert_overhead_vs_own_io": overhead_own,
        "peak_rss_mib": mem, "peak_rss_over_file_size": mem["qdq"] / size_mb,
        "residual_stack_s": growth,
        "per_block_ms": {n: 1000 * s / n for n, s in growth.items()},
    }
    out = ROOT / "bench" / "results" / "insert.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"ResNet50 ({size_mb:.1f} MiB): plain load+save {med['plain']:.3f} s, qdq-onnx "
          f"load+prepare+plan+insert+save {med['qdq']:.3f} s -> overhead "
          f"{overhead * 100:+.0f}% (target <= +50%)")
    print(f"  vs qdq-onnx's own load+streaming save {med['own_io']:.3f} s: placement and "
          f"insertion add {overhead_own * 100:+.0f}%")
    print(f"peak RSS: plain {mem['plain']:.0f} MiB, qdq-onnx {mem['qdq']:.0f} MiB = "
          f"{mem['qdq'] / size_mb:.2f}x the file (target <= 3x)")
    for n, s in growth.items():
        print(f"residual stack N={n:5d}: {s:.3f} s ({1000 * s / n:.2f} ms/block)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
