"""Benchmark: `qdq-onnx insert` on ResNet50 against plain onnx load+save of the same file,
both as processes (start-up included) and in one process; growth over N residual blocks;
peak memory against the model file size. Two kinds of file: converted by `qdq-onnx
convert` (NCHW throughout) and exported by plain tf2onnx (its NHWC input and a Transpose at
the graph's edge, what users bring as "any float ONNX file"). Sides alternate in one run;
outputs on tmpfs. Writes bench/results/insert.json.

    .venv/bin/python scripts/bench_insert.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from bench_common import (
    child_peak_rss_mib,
    keras_application_onnx,
    process_peak_rss_mib,
    tf2onnx_application_onnx,
    write_result,
)
from onnx import TensorProto, helper, numpy_helper

PLAIN = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"


def plain(src: str, dst: str) -> None:
    onnx.save(onnx.load(str(src)), str(dst))


def own_io(src: str, dst: str) -> None:
    """qdq-onnx's own load + checked streaming atomic save, no planning: isolates the cost
    of placement and insertion."""
    from qdq_onnx import pipeline

    pipeline.save(pipeline.load(src).model, dst, check="the model")


def qdq(src: str, dst: str) -> None:
    """What `qdq-onnx insert` does, in process: the remainder typed FP16 (the default) and
    the checked save included."""
    from qdq_onnx import pipeline

    source = pipeline.load(src)
    q = pipeline.insert(source.model, copy=False)
    pipeline.write(q.qdq, dst, like=source, check="the quantized model", copy=False)


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


def process_times(src: Path, dst: Path, repeats: int) -> dict[str, list[float]]:
    """Wall time of whole processes: `qdq-onnx insert` and a Python that only loads and
    saves the same file with onnx, alternating."""
    commands = sides(src, dst)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
    return times


def in_process_times(src: Path, dst: Path, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"plain": [], "own_io": [], "qdq": []}
    qdq(src, dst)  # warm imports
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("own_io", own_io), ("qdq", qdq)):
            t = time.perf_counter()
            fn(src, dst)
            times[name].append(time.perf_counter() - t)
    return times


def growth() -> dict[int, float]:
    from qdq_onnx import pipeline

    out = {}
    for n in (10, 100, 1000):
        model = residual_stack(n)
        t = time.perf_counter()
        pipeline.insert(model)
        out[n] = time.perf_counter() - t
    return out


def sides(src: Path, dst: Path) -> dict[str, list[str]]:
    """The two processes compared: plain onnx load+save, and `qdq-onnx insert`."""
    cli = [str(Path(sys.executable).parent / "qdq-onnx"), "insert", str(src), "-o", str(dst)]
    return {"plain_process": [sys.executable, "-c", PLAIN, str(src), str(dst)],
            "insert_process": cli}


def memory(src: Path) -> dict:
    """Peak RSS: of whole processes, and added by the work over the imports (measured in
    fresh children while this process is small: children inherit the parent's peak)."""
    with tempfile.TemporaryDirectory(dir=_shm()) as tmp:
        dst = Path(tmp) / "out.onnx"
        preload = "import onnx, onnx_graphsurgeon, qdq_onnx.pipeline"
        added = {k: child_peak_rss_mib("bench_insert", k, (src, dst), preload)
                 for k in ("plain", "qdq")}
        whole = {k: process_peak_rss_mib(cmd) for k, cmd in sides(src, dst).items()}
    return {"added": added, "process": whole}


def _shm() -> str | None:
    # Both sides write the same ~100 MB; tmpfs keeps disk-flush noise out of the comparison.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def measure(src: Path, repeats: int, mem: dict) -> dict:
    """Process and in-process times of one file (the sides alternating), with its memory."""
    size_mb = src.stat().st_size / 2**20
    shm = _shm()
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        dst = Path(tmp) / "out.onnx"
        proc = process_times(src, dst, repeats)
        inproc = in_process_times(src, dst, repeats)
    med = {k: statistics.median(v) for k, v in {**proc, **inproc}.items()}
    return {"file_mib": size_mb, "output_dir": "tmpfs" if shm else "disk", "median_s": med,
            "insert_process_over_plain_process": med["insert_process"] / med["plain_process"],
            "insert_overhead_vs_plain_io": med["qdq"] / med["plain"] - 1,
            "insert_overhead_vs_own_io": med["qdq"] / med["own_io"] - 1,
            "peak_rss_mib": mem,
            "process_peak_rss_over_file_size": mem["process"]["insert_process"] / size_mb,
            "added_peak_rss_over_file_size": mem["added"]["qdq"] / size_mb}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    # Start-up as an installed qdq-onnx has it: pip byte-compiles a wheel's modules, an
    # editable install does not (and PYTHONDONTWRITEBYTECODE keeps Python from caching them).
    import compileall

    import qdq_onnx

    compileall.compile_dir(str(Path(qdq_onnx.__file__).parent), quiet=1)
    files = {"converted by qdq-onnx": keras_application_onnx("ResNet50"),
             "exported by tf2onnx (NHWC input)": tf2onnx_application_onnx("ResNet50")}
    mem = {kind: memory(src) for kind, src in files.items()}  # first, while this is small
    results = {kind: measure(src, args.repeats, mem[kind]) for kind, src in files.items()}
    stack = growth()
    out = write_result("insert", {
        "model": "keras ResNet50 (weights=None)", "repeats": args.repeats, "files": results,
        "residual_stack_s": stack, "per_block_ms": {n: 1000 * s / n for n, s in stack.items()}})
    for kind, r in results.items():
        med, mem = r["median_s"], r["peak_rss_mib"]
        print(f"ResNet50 {kind} ({r['file_mib']:.1f} MiB) as processes: qdq-onnx insert "
              f"{med['insert_process']:.3f} s vs python -c 'onnx.save(onnx.load(...))' "
              f"{med['plain_process']:.3f} s -> {r['insert_process_over_plain_process']:.2f}x "
              "(target <= 1.5x)")
        print(f"  in one process: load+prepare+plan+insert+FP16 typing+checked save "
              f"{med['qdq']:.3f} s, "
              f"plain load+save {med['plain']:.3f} s, qdq-onnx load+checked save "
              f"{med['own_io']:.3f} s")
        print(f"  peak RSS of the processes: plain {mem['process']['plain_process']:.0f} MiB, "
              f"qdq-onnx insert {mem['process']['insert_process']:.0f} MiB = "
              f"{r['process_peak_rss_over_file_size']:.2f}x the file (target <= 2.5x); added "
              f"by the work over the imports: plain {mem['added']['plain']:.0f} MiB, "
              f"qdq-onnx {mem['added']['qdq']:.0f} MiB")
    for n, s in stack.items():
        print(f"residual stack N={n:5d}: {s:.3f} s ({1000 * s / n:.2f} ms/block)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
