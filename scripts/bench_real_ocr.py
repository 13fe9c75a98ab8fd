"""A real pretrained model where PTQ loses: the PP-OCRv4 text recogniser that ships in
rapidocr-onnxruntime (paddle2onnx, SVTR attention, CTC over 6,625 characters), on text
lines rendered with Pillow's bundled font (random strings of unambiguous letters and digits;
the same renderer for every row). Task metric: the exact-match rate of the recognised strings
(greedy CTC decoding with the model's own dictionary) on held-out lines.

Rows, all through the command line as a user would run them, every file evaluated in
onnxruntime with graph optimizations off (onnxruntime 1.19 miscomputes FP16-remainder Q/DQ
files optimized; see the platform notes):
- float: the pretrained model;
- PTQ: `qdq-onnx insert` with calibration on the unlabeled training lines, defaults (INT8,
  FP16 remainder, range guard) and each calibration method;
- QAT: `qdq-onnx finetune --distill` of the default PTQ file on the same unlabeled lines (no
  labels: the float model is the teacher);
- control: the same `finetune --distill` command, same steps and schedule, on the float
  model (the equal-effort control: what the extra steps do without quantization).
Writes bench/results/real_ocr.json.

    .venv/bin/python scripts/bench_real_ocr.py [--train 512] [--test 400] [--epochs 2]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import write_result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
QDQ = [sys.executable, "-m", "qdq_onnx"]
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz"  # no 0/O, 1/l/I
HEIGHT, WIDTH = 48, 320  # PaddleOCR's recognition input


def render(text: str, size: int, ink: int) -> np.ndarray:
    """One text line as the recogniser takes it: [3, 48, 320], (x / 255 - 0.5) / 0.5."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)  # bundled with Pillow: the same everywhere
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 16, bottom - top + 12), 255)
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, fill=ink, font=font)
    width = min(WIDTH, max(1, round(img.width * HEIGHT / img.height)))
    img = img.resize((width, HEIGHT), Image.BILINEAR)
    canvas = np.full((HEIGHT, WIDTH), 255, np.float32)
    canvas[:, :width] = np.asarray(img, np.float32)
    return np.repeat(((canvas / 255 - 0.5) / 0.5)[None], 3, axis=0)


def lines(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list(ALPHABET), int(rng.integers(5, 13)))) for _ in range(n)]
    x = np.stack([render(t, int(rng.integers(28, 40)), int(rng.integers(0, 60)))
                  for t in texts])
    return x, texts


def exact_match(path: Path, x: np.ndarray, texts: list[str], chars: list[str]) -> float:
    from qdq_onnx.graph.sessions import inference_session

    # a ModelProto: the session then runs FP16 Q/DQ with ONNX's rounding (sessions.py)
    session = inference_session(_load(path), optimize=False)
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 32]})[0]
                             for i in range(0, len(x), 32)])
    hits = 0
    for row, truth in zip(logits.argmax(-1), texts):
        out, prev = [], 0
        for k in row:  # greedy CTC: collapse repeats, drop the blank (0)
            if k != prev and k != 0:
                out.append(chars[k])
            prev = k
        hits += "".join(out).strip() == truth
    return hits / len(texts)


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def cli(*args: str) -> float:
    """Run one qdq-onnx command; its wall time (raises with its stderr on failure)."""
    start = time.perf_counter()
    done = subprocess.run([*QDQ, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"qdq-onnx {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=512, help="unlabeled training lines")
    p.add_argument("--test", type=int, default=400, help="held-out labeled lines")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: finetune's own default, 1e-5 cosine; 1e-4 "
                        "measured 69%% with the attention float)")
    p.add_argument("--methods", nargs="*", default=["max", "percentile", "entropy", "mse"])
    args = p.parse_args()
    import onnx

    src = Path(importlib.metadata.distribution("rapidocr-onnxruntime").locate_file(MEMBER))
    meta = {m.key: m.value for m in onnx.load(str(src), load_external_data=False).metadata_props}
    chars = ["blank", *meta["character"].splitlines(), " "]
    x_train, _ = lines(args.train, seed=1)
    x_test, texts = lines(args.test, seed=2)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="qdq-onnx-ocr-") as tmp:
        work = Path(tmp)
        np.savez(work / "train.npz", x=x_train)
        np.savez(work / "calib.npz", x=x_train[:128])
        rows["float"] = {"exact_match": exact_match(src, x_test, texts, chars)}
        print(f"float: {rows['float']['exact_match']:.3f}", flush=True)
        default = None
        for method in args.methods:
            out = work / f"ptq_{method}.onnx"
            seconds = cli("insert", str(src), "--calib", str(work / "calib.npz"),
                          "--calib-method", method, "-o", str(out))
            key = f"ptq_{method}"
            rows[key] = {"exact_match": exact_match(out, x_test, texts, chars),
                         "seconds": round(seconds, 1)}
            default = default or out
            print(f"{key}: {rows[key]['exact_match']:.3f}", flush=True)
        train = ["--data", str(work / "train.npz"), "--distill", "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--quiet",
                 *(["--lr", str(args.lr)] if args.lr is not None else [])]
        for key, start in (("qat_distill", default), ("float_control", src)):
            out = work / f"{key}.onnx"
            seconds = cli("finetune", str(start), *train, "-o", str(out))
            rows[key] = {"exact_match": exact_match(out, x_test, texts, chars),
                         "seconds": round(seconds, 1)}
            print(f"{key}: {rows[key]['exact_match']:.3f} ({seconds:.0f} s)", flush=True)
    result = {"model": f"rapidocr-onnxruntime {importlib.metadata.version('rapidocr-onnxruntime')}"
                       f" {MEMBER}",
              "task": "exact match of recognised strings, rendered text lines",
              "settings": {**vars(args), "qat_starts_from": f"ptq_{args.methods[0]}"},
              "rows": rows}
    print(f"wrote {write_result('real_ocr', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
