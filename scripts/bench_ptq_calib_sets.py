"""Post-training quantization of the MNIST CNNs on several calibration sets (issue 27): is
the difference between qdq-onnx's defaults and NVIDIA Model Optimizer's a property of the
tools, or of which 512 images calibrate them?

`scripts/bench_ptq_peers.py` calibrates every tool on one set (the first 512 training
images) and scores 10000 test images once; on the MNIST CNNs the tools then differ by one
or two test images. Here each tool (the same commands and evaluator as bench_ptq_peers:
qdq-onnx `insert --calib` with its defaults, onnxruntime `quantize_static`, Model
Optimizer from its own environment) quantizes each model on K disjoint calibration sets
(set k: training images 512k .. 512k + 511; set 0 is bench_ptq_peers' set), and every file
is scored on the same test images in .venv-newest's onnxruntime at its default level.

Per model and tool: the accuracy on each set, the mean and range. Per model and set, the
paired comparison of qdq-onnx with each peer on the same test images: the images only
qdq-onnx gets right, those only the peer gets right, and the exact two-sided McNemar p
(binomial on the discordant images; small p: a difference beyond test-set noise). Also
Model Optimizer on set 0 with its images in another order (first image 1, 2, 3): its
scales depend on the order (its entropy histogram is sized by the first sample), qdq-onnx's
do not.

Accuracy differences of a few test images are within what 10000 images resolve, so two
lower-variance measures stand beside it: per file, the test images on which its top class
differs from the float model's ("flips": what quantization changed, right or wrong), and a
row "qdq-onnx, Model Optimizer's placement": qdq-onnx's defaults with a spec that leaves
float every weighted layer Model Optimizer's file left float (it keeps a batch-1 model's
fully connected layers in FP16 by its GEMV check), so that the two differ in ranges alone.
Writes bench/results/ptq_calib_sets.json.

    .venv/bin/python scripts/bench_ptq_calib_sets.py [--modelopt-python /tmp/mo/bin/python]
        [--models mnist,mnist_gap] [--sets 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import bench_ptq_peers as peers
import numpy as np
from bench_common import machine_info, write_result

ROOT, NEWEST = peers.ROOT, peers.NEWEST
SET_SIZE = 512


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs as Binomial(n, 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def predictions(path: str, folder: Path) -> np.ndarray:
    """Top-1 classes of one file on the test images (in .venv-newest's onnxruntime)."""
    out = folder / (Path(path).stem + ".pred.npy")
    subprocess.run([str(NEWEST), __file__, "_predict", path, str(folder / "test.npz"),
                    str(out)], check=True, cwd=ROOT)
    return np.load(out)


def _predict(path: str, test: str, out: str) -> None:
    with np.load(test) as z:
        x = z["x"]
    session = peers.Session(path, True)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.save(out, logits.reshape(len(x), -1).argmax(-1))


SAME_PLACEMENT = "qdq-onnx, modelopt placement"


def modelopt_float_layers(path: Path) -> list[str]:
    """The weighted nodes (Conv, ConvTranspose, MatMul, Gemm) of Model Optimizer's file whose
    weight is not dequantized: the layers it left in the float remainder."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node
            if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
            and len(n.input) > 1 and n.input[1] not in dequantized]


def quantize_same_placement(prep: peers.Prepared, folder: Path, tool_key: str, args) -> dict:
    """qdq-onnx's defaults with a spec leaving float the layers Model Optimizer left float
    (reused while the qdq-onnx key, the data and the spec hold)."""
    layers = modelopt_float_layers(folder / "modelopt.onnx")
    spec = folder / "modelopt_placement.yaml"
    spec.write_text("layers:\n" + "".join(
        f"  - node: {json.dumps(name)}\n    quantize_input: false\n"
        f"    quantize_weight: false\n" for name in layers) if layers else "layers: []\n")
    done = peers.quantize("qdq-onnx", prep, folder, tool_key, args, spec=spec,
                          name="qdq-onnx-modelopt-placement")
    return {**done, "float_layers": layers}


def _prepared(name: str, images: np.ndarray, base: peers.Prepared) -> peers.Prepared:
    return dataclasses.replace(base, calib=images, data={**base.data, "calibration": name})


def _run(tools: list[str], keys: dict, prep: peers.Prepared, folder: Path, truth: np.ndarray,
         args, reference: np.ndarray | None = None) -> dict:
    """Per tool: accuracy and predictions; with the float model's predictions `reference`,
    the flips too, and the same-placement row after Model Optimizer's."""
    rows = {}
    for tool in tools + ([SAME_PLACEMENT] if reference is not None and "modelopt" in tools
                         else []):
        if tool == SAME_PLACEMENT:
            if "pred" not in rows.get("modelopt", {}):
                continue
            q = quantize_same_placement(prep, folder, keys["qdq-onnx"], args)
        else:
            q = peers.quantize(tool, prep, folder, keys[tool], args)
        if "error" in q:
            rows[tool] = {"error": q["error"]}
            continue
        pred = predictions(q["path"], folder)
        rows[tool] = {"accuracy": float(np.mean(pred == truth)), "pred": pred}
        if reference is not None:
            rows[tool]["flips"] = int(np.sum(pred != reference))
        if "float_layers" in q:
            rows[tool]["float_layers"] = q["float_layers"]
    return rows


def _paired(rows: dict, truth: np.ndarray, peer: str) -> dict | None:
    if "pred" not in rows.get("qdq-onnx", {}) or "pred" not in rows.get(peer, {}):
        return None
    ours, theirs = rows["qdq-onnx"]["pred"] == truth, rows[peer]["pred"] == truth
    only_ours, only_theirs = int(np.sum(ours & ~theirs)), int(np.sum(theirs & ~ours))
    return {"only_qdq_onnx_right": only_ours, f"only_{peer}_right": only_theirs,
            "mcnemar_p": round(mcnemar_p(only_ours, only_theirs), 4)}


def _model(name: str, tools: list[str], keys: dict, args) -> dict:
    base = peers.TASKS[name](args)
    with np.load(ROOT / "out" / "bench" / name / "train.npz") as z:
        train = z["image"]
    truth = np.asarray(base.truth)
    sets, paired, flips, same_float = [], [], [], []
    out_dir = Path(args.out_dir).resolve()
    reference = predictions(str(base.src), peers.prepare_folder(f"{name}/float", base, out_dir))
    for k in range(args.sets):
        images = train[k * SET_SIZE:(k + 1) * SET_SIZE]
        label = f"training images {k * SET_SIZE}..{(k + 1) * SET_SIZE - 1}"
        prep = _prepared(label, images, base)
        folder = peers.prepare_folder(f"{name}/set{k}", prep, out_dir)
        rows = _run(tools, keys, prep, folder, truth, args, reference)
        line = "  ".join(f"{t} {r['accuracy'] * 100:.2f} ({r['flips']} flips)"
                         if "accuracy" in r else f"{t} failed" for t, r in rows.items())
        print(f"  set {k}: {line}", flush=True)
        sets.append({t: r.get("accuracy") for t, r in rows.items()})
        flips.append({t: r["flips"] for t, r in rows.items() if "flips" in r})
        same_float.append(rows.get(SAME_PLACEMENT, {}).get("float_layers"))
        paired.append({peer: _paired(rows, truth, peer) for peer in tools if peer != "qdq-onnx"})
    summary = {}
    for tool in dict.fromkeys(t for s in sets for t in s):
        acc = [s[tool] for s in sets if s.get(tool) is not None]
        flipped = [f[tool] for f in flips if tool in f]
        if acc:
            summary[tool] = {"mean": float(np.mean(acc)), "min": min(acc), "max": max(acc),
                             "correct_images_mean": float(np.mean(acc)) * len(truth),
                             **({"flips_mean": float(np.mean(flipped))} if flipped else {})}
    order = {}
    if "modelopt" in tools:  # set 0 rotated: another image first, the same 512 images
        first = train[:SET_SIZE]
        for shift in (1, 2, 3):
            prep = _prepared(f"set 0 starting at its image {shift}", np.roll(first, -shift, 0),
                             base)
            folder = peers.prepare_folder(f"{name}/set0_from{shift}", prep, out_dir)
            rows = _run(["qdq-onnx", "modelopt"], keys, prep, folder, truth, args)
            order[f"from image {shift}"] = {t: r.get("accuracy") for t, r in rows.items()}
            print(f"  set 0 from image {shift}: " + "  ".join(
                f"{t} {a * 100:.2f}" for t, a in order[f"from image {shift}"].items()
                if a is not None), flush=True)
    return {"source": base.source, "test": base.data["test"],
            "float": {"accuracy": float(np.mean(reference == truth)),
                      "correct_images": int(np.sum(reference == truth))},
            "sets": sets, "flips": flips, "paired_with_qdq_onnx": paired, "summary": summary,
            "modelopt_float_layers": same_float, "set0_order": order}


def pool_totals(models: dict) -> dict:
    """Per tool, summed over every model and calibration set that all tools quantized: the
    test images classified right, that number against qdq-onnx's, and the flips."""
    runs = [(m, k) for m, v in models.items() for k, s in enumerate(v["sets"])
            if all(a is not None for a in s.values())]
    if not runs:
        return {}
    tests = {m: models[m]["float"]["correct_images"] / models[m]["float"]["accuracy"]
             for m, _ in runs}
    tools = list(models[runs[0][0]]["sets"][runs[0][1]])
    correct = {t: sum(round(models[m]["sets"][k][t] * tests[m]) for m, k in runs)
               for t in tools}
    out = {"runs": len(runs), "float_correct_images": sum(
        models[m]["float"]["correct_images"] for m, _ in runs)}
    for t in tools:
        out[t] = {"correct_images": correct[t],
                  "correct_images_minus_qdq_onnx": correct[t] - correct["qdq-onnx"],
                  "flips": sum(models[m]["flips"][k].get(t, 0) for m, k in runs)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modelopt-python", help="a Python with nvidia-modelopt installed")
    p.add_argument("--models", default=",".join(peers.MNIST),
                   help=f"comma-separated, of {', '.join(peers.MNIST)} (default: all)")
    p.add_argument("--sets", type=int, default=5, help="disjoint calibration sets of 512")
    p.add_argument("--out-dir", default=str(ROOT / "out" / "bench" / "ptq_calib_sets"))
    p.add_argument("--mnist-test", type=int, default=10000, help="MNIST test images")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per quantizer run")
    p.add_argument("--fresh", action="store_true", help="requantize everything")
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n]
    if any(n not in peers.MNIST for n in names) or not 1 <= args.sets <= 90:
        p.error(f"--models from {', '.join(peers.MNIST)}; --sets from 1 to 90")
    started = time.perf_counter()
    version = peers.output_of([str(NEWEST), "-c", "import onnxruntime; "
                               "print(onnxruntime.__version__)"])
    keys, modelopt = peers.tool_keys(version, args.modelopt_python)
    tools = list(keys)
    models = {}
    for name in names:
        print(f"== {name}", flush=True)
        models[name] = _model(name, tools, keys, args)
        for tool, s in models[name]["summary"].items():
            print(f"  {tool:12} mean {s['mean'] * 100:.3f}  range {s['min'] * 100:.2f}.."
                  f"{s['max'] * 100:.2f}  flips {s.get('flips_mean', 0):.1f}", flush=True)
    result = {
        "pool": pool_totals(models),
        "versions": {**machine_info()["versions"], "evaluator onnxruntime": version,
                     **({"nvidia-modelopt": modelopt} if modelopt else {})},
        "tools": {"qdq-onnx": f"qdq-onnx insert MODEL --calib CALIB.npz -o OUT (defaults), at "
                              f"{peers.git_state()}",
                  "onnxruntime": "bench_ptq_peers' quantize_static settings",
                  **({"modelopt": "bench_ptq_peers' Model Optimizer call (int8, defaults)"}
                     if modelopt else {})},
        "definitions": {
            "sets": f"calibration set k: training images {SET_SIZE}k .. {SET_SIZE}k + "
                    f"{SET_SIZE - 1} of the model's train.npz (set 0 = bench_ptq_peers'); "
                    "top-1 accuracy on the test images",
            "paired_with_qdq_onnx": "per set: test images only qdq-onnx classifies right, "
                                    "only the peer does, and the exact two-sided McNemar p",
            "flips": "per set and file: test images whose top class differs from the float "
                     "model's (fewer: closer to the float model, right or wrong)",
            SAME_PLACEMENT: "qdq-onnx insert --calib with its defaults and a spec leaving "
                            "float the weighted layers Model Optimizer's file left float "
                            "(modelopt_float_layers): the two differ in ranges alone",
            "set0_order": "set 0's images rotated so that image 1, 2 or 3 comes first",
            "pool": "per tool, summed over every model and set all tools quantized "
                    "(`runs` of them): test images right, that against qdq-onnx's, flips; "
                    "the runs of one model share its test images, so these are totals, "
                    "not independent trials"},
        "settings": {k: v for k, v in vars(args).items() if k != "fresh"},
        "seconds": round(time.perf_counter() - started),
        "models": models}
    for tool, t in result["pool"].items():
        if isinstance(t, dict):
            print(f"  all {result['pool']['runs']} runs: {tool:12} {t['correct_images']} right "
                  f"({t['correct_images_minus_qdq_onnx']:+d} against qdq-onnx), "
                  f"{t['flips']} flips", flush=True)
    path = write_result("ptq_calib_sets", result)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_predict":
        _predict(*sys.argv[2:5])
    else:
        sys.exit(main())
