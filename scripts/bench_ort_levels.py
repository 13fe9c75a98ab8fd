"""Does onnxruntime at its default optimization level compute what a qdq-onnx file says?
(issue 27: files every client accepts.) The real PP-OCRv4 text detector that ships in
rapidocr-onnxruntime (paddle2onnx, DB head, sigmoid probability map), PTQ with the defaults
(`pipeline.insert` + the FP16-remainder typing, as `qdq-onnx insert` runs them) on rendered
pages, twice: as written now, and with the typing stage's bias headroom turned off
(qdq_onnx/precision/bias_headroom.py: onnxruntime's WeightBiasQuantization turns a bias into
int32 dividing in FP16, which overflows for a stem with a large bias and for dead
channels). Each file is evaluated in the newest onnxruntime (.venv-newest) with graph
optimizations off (the graph as written: what TensorRT reads) and at the default level,
against the float model on held-out pages: the SQNR of the probability map and the share of
pixels above DB's 0.3 threshold (text area). No box metric is claimed: a connected-component
box metric on rendered pages scored the INT8 files above the float model (box geometry), so
it measures the renderer more than the model.

    .venv/bin/python scripts/bench_ort_levels.py [--calib 64] [--test 48]

Writes bench/results/ort_levels.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import write_result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NEWEST = ROOT / ".venv-newest" / "bin" / "python"
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz"
HEIGHT, WIDTH = 320, 480
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]  # PaddleOCR's det input
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
THRESHOLD = 0.3  # DB's binarization threshold in PaddleOCR's det post-processing


def pages(n: int, seed: int) -> np.ndarray:
    """`n` pages [3, 320, 480] of dark random strings on a light background, Pillow's
    bundled font at 18-33 px, normalized as PaddleOCR normalizes its detector's input."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("L", (WIDTH, HEIGHT), int(rng.integers(200, 256)))
        draw = ImageDraw.Draw(img)
        y = int(rng.integers(8, 30))
        while True:
            font = ImageFont.load_default(size=int(rng.integers(18, 34)))
            text = "".join(rng.choice(list(ALPHABET), int(rng.integers(4, 14))))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x = int(rng.integers(8, max(9, WIDTH - (right - left) - 8)))
            if y + (bottom - top) > HEIGHT - 8 or x + (right - left) > WIDTH - 4:
                break
            draw.text((x - left, y - top), text, fill=int(rng.integers(0, 80)), font=font)
            y += (bottom - top) + int(rng.integers(10, 40))
        gray = np.asarray(img, np.float32) / 255
        out.append((np.repeat(gray[None], 3, 0) - MEAN) / STD)
    return np.stack(out).astype(np.float32)


def source() -> Path:
    """The detector, found as the test pool finds it (tests/real_pool.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from real_pool import BY_NAME

    return BY_NAME["ppocr_det"].path()


def quantize(src: Path, calib: np.ndarray, out: Path, headroom: bool) -> dict:
    """The default PTQ file; without `headroom`, the typing stage's raise is skipped."""
    import onnx

    import qdq_onnx.precision.stage as stage
    from qdq_onnx import pipeline
    from qdq_onnx.precision.bias_headroom import Headroom

    start = time.perf_counter()
    saved = stage.raise_bias_headroom
    if not headroom:
        stage.raise_bias_headroom = lambda model: Headroom()
    try:
        q = pipeline.insert(onnx.load(str(src)), data=calib)
        typed = pipeline.type_remainder(q.qdq, data=calib)
    finally:
        stage.raise_bias_headroom = saved
    onnx.save(typed.model, str(out))
    note = next((line for line in typed.lines() if line.startswith("bias headroom")), None)
    return {"seconds": round(time.perf_counter() - start, 1), "headroom_note": note}


_EVALUATE = """
import json, sys, numpy as np, onnxruntime as ort
x, t = np.load(sys.argv[1]), float(sys.argv[2])
def run(path, level):
    so = ort.SessionOptions(); so.graph_optimization_level = level; so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 8]})[0] for i in range(0, len(x), 8)])
ref = run(sys.argv[3], ort.GraphOptimizationLevel.ORT_DISABLE_ALL).astype(np.float64)
out = {"onnxruntime": ort.__version__, "float_text_area": float((ref > t).mean()),
       "files": {}}
for path in sys.argv[4:]:
    row = {}
    for tag, level in (("optimizations_off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                       ("default_level", ort.SessionOptions().graph_optimization_level)):
        got = run(path, level).astype(np.float64)
        row[tag] = {"sqnr_db": round(float(10 * np.log10(np.sum(ref ** 2)
                                                         / np.sum((got - ref) ** 2))), 2),
                    "text_area": round(float((got > t).mean()), 5)}
    out["files"][path] = row
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calib", type=int, default=64, help="rendered calibration pages")
    ap.add_argument("--test", type=int, default=48, help="rendered held-out pages")
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "bench" / "ort_levels"))
    args = ap.parse_args()
    if not NEWEST.exists():
        raise SystemExit(f"{NEWEST} is missing: the evaluator (make installs it)")
    start = time.perf_counter()
    folder = Path(args.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    src = source()
    calib = pages(args.calib, seed=1)
    np.save(folder / "test.npy", pages(args.test, seed=2))
    files = {"qdq-onnx": folder / "qdq-onnx.onnx",
             "qdq-onnx without bias headroom": folder / "no-headroom.onnx"}
    made = {name: quantize(src, calib, path, headroom=name == "qdq-onnx")
            for name, path in files.items()}
    done = subprocess.run([str(NEWEST), "-c", _EVALUATE, str(folder / "test.npy"),
                           str(THRESHOLD), str(src),
                           *map(str, files.values())], capture_output=True, text=True,
                          check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {name: {**made[name], **measured["files"][str(path)]}
            for name, path in files.items()}
    for name, row in rows.items():
        print(f"{name:32s} off {row['optimizations_off']['sqnr_db']:6.2f} dB area "
              f"{row['optimizations_off']['text_area']:.4f} | default "
              f"{row['default_level']['sqnr_db']:6.2f} dB area "
              f"{row['default_level']['text_area']:.4f}", flush=True)
    out = write_result("ort_levels", {
        "model": f"rapidocr-onnxruntime {src.name} (PP-OCRv4 text detector, paddle2onnx)",
        "data": {"calibration": f"{args.calib} rendered pages 3x{HEIGHT}x{WIDTH} (seed 1)",
                 "test": f"{args.test} rendered pages (seed 2)"},
        "evaluator": f"onnxruntime {measured['onnxruntime']} (.venv-newest), CPU",
        "definitions": {"sqnr_db": "10 log10 of the float map's power over the power of its "
                                   "difference from the float map (the float model run with "
                                   "optimizations off)",
                        "text_area": f"share of map pixels above {THRESHOLD} (DB's threshold)"},
        "float_text_area": round(measured["float_text_area"], 5),
        "rows": rows, "seconds": round(time.perf_counter() - start)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
