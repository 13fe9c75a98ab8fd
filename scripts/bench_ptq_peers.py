"""Post-training quantization side by side (issue 27, part 6): qdq-onnx with its defaults,
onnxruntime `quantize_static` and NVIDIA Model Optimizer, each model on its own task, with
the same calibration data for every tool.

Tools, each with its defaults (as a user runs it):
- qdq-onnx: `qdq-onnx insert MODEL --calib CALIB.npz -o OUT` and nothing else (whatever the
  defaults are when this runs: INT8 with the FP16 remainder today);
- onnxruntime: `quantize_static` of .venv-newest's onnxruntime, as close to TensorRT's needs
  as it goes (QDQ format, MinMax, symmetric INT8 activations and weights, per channel:
  bench_common.ort_quantize_static), calibration batches of 32;
- Model Optimizer (with --modelopt-python, from its own virtual environment, never a
  dependency): `modelopt.onnx.quantization.quantize(quantize_mode="int8")`, its defaults
  otherwise (entropy calibration, FP16 remainder; CPU calibration), on a copy with static
  input shapes (batch 1, the data's shape), which it needs.

Models and tasks (--models picks; all by default):
- mnist, mnist_gap, mnist_bn_after_relu: the CNNs of scripts/train_mnist.py (default,
  `--variant gap`, `--variant bn-after-relu`; trained once, 2 epochs with `--cosine`, into
  out/bench/mnist, out/bench/mnist_gap, out/bench/mnist_bn_after_relu), top-1
  accuracy on the MNIST test set (the first --mnist-test images), calibration on the 512
  training images train_mnist.py writes;
- ppocr_rec: rapidocr's PP-OCRv4 recogniser, exact match of the recognised strings on
  text lines rendered as bench_real_ocr.py renders them (its renderer and its exact_match);
- ppocr_cls: rapidocr's text-direction classifier, accuracy on rendered lines (the same
  renderer), each cropped to its ink, turned 180 degrees with probability 1/2 (the label),
  and resized/padded to 48x192 as rapidocr feeds its classifier;
- magika: Google's Magika file-type classifier on real files of this machine whose type is
  known (by extension, checked by magic bytes for binary formats), top-1 accuracy against
  that type; features as Magika's config says (first and last 1024 bytes of the first and
  last 4096, outer whitespace stripped, padded with 256).

Per model and file: the task metric; the share of MACs (Conv, ConvTranspose, MatMul, Gemm,
from onnx shape inference at the data's shape, batch 1) in INT8, where a layer counts as
INT8 when its first two inputs (data and weight) come through a DequantizeLinear of an int8
tensor (an int8 QuantizeLinear or stored int8 weights), through Cast and layout ops at
most; Cast nodes; Q/DQ pairs (DequantizeLinear nodes fed by a QuantizeLinear or by stored
quantized weights); the quantizer's wall time (the whole command). Every file, the float
model's too, is evaluated in .venv-newest's onnxruntime at its default optimization level.

Quantized files are kept under --out-dir and reused while the tool, its settings and the
data are unchanged (qdq-onnx: a hash of qdq_onnx/ and rules/), so an interrupted run resumes
and a rerun after a change of qdq-onnx's defaults requantizes only its column. Writes
bench/results/ptq_peers.json (models not run this time are kept from the last file).

    .venv/bin/python scripts/bench_ptq_peers.py [--modelopt-python /tmp/mo/bin/python]
        [--models mnist,ppocr_rec,...] [--out-dir out/bench/ptq_peers] [--fresh]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
from bench_common import RESULTS, ort_quantize_static, write_result
from bench_lint import _MODELOPT
from bench_real_ocr import QDQ, exact_match, lines

ROOT = Path(__file__).resolve().parent.parent
NEWEST = ROOT / ".venv-newest" / "bin" / "python"
TOOLS = ("qdq-onnx", "onnxruntime", "modelopt")
COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
THROUGH = ("Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
MNIST = {"mnist": "default", "mnist_gap": "gap", "mnist_bn_after_relu": "bn-after-relu"}
# Magika: types whose files this machine holds by the dozen, by extension (and leading
# bytes for binary formats); the label is Magika's name for the type
MAGIKA_TYPES: dict[str, tuple[tuple[str, ...], bytes]] = {
    "python": ((".py",), b""), "pythonbytecode": ((".pyc",), b""), "json": ((".json",), b""),
    "html": ((".html",), b""), "c": ((".c",), b""), "cpp": ((".cc", ".cpp"), b""),
    "javascript": ((".js",), b""), "css": ((".css",), b""), "markdown": ((".md",), b""),
    "shell": ((".sh",), b""), "xml": ((".xml",), b""), "yaml": ((".yaml", ".yml"), b""),
    "rst": ((".rst",), b""), "ini": ((".ini",), b""),
    "csv": ((".csv",), b""), "perl": ((".pl", ".pm"), b""), "tcl": ((".tcl",), b""),
    "sql": ((".sql",), b""), "svg": ((".svg",), b""), "png": ((".png",), b"\x89PNG"),
    "gif": ((".gif",), b"GIF8"), "gzip": ((".gz",), b"\x1f\x8b"),
    "zip": ((".zip",), b"PK\x03\x04"), "jar": ((".jar",), b"PK\x03\x04"),
    "pdf": ((".pdf",), b"%PDF"), "elf": ((".so",), b"\x7fELF"),
    "ttf": ((".ttf",), b"\x00\x01\x00\x00"), "wav": ((".wav",), b"RIFF"),
    "npy": ((".npy",), b"\x93NUMPY"), "postscript": ((".ps",), b"%!"), "onnx": ((".onnx",), b""),
}
MAGIKA_ROOTS = ("/usr/share", "/usr/lib", "/usr/include", str(ROOT / ".venv" / "lib"))


@dataclass
class Prepared:
    """One model on its task: the float file, the calibration data every tool gets, the
    labelled test data, and what the results file says about them."""
    src: Path
    calib: np.ndarray
    x: np.ndarray
    truth: list  # class indices, or strings for exact match
    kind: str  # "accuracy" or "exact_match"
    source: str
    task: str
    data: dict
    extra: dict = field(default_factory=dict)


# ---- tasks (in the driver, .venv) ----------------------------------------------------------

def _real(name: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from real_pool import BY_NAME

    return BY_NAME[name].path()


def _mnist(name: str, args) -> Prepared:
    variant = MNIST[name]
    folder = ROOT / "out" / "bench" / name
    if not (folder / "fp32.onnx").exists():
        print(f"training {name} (train_mnist.py --variant {variant})", flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--out",
                        str(folder), "--variant", variant, "--cosine"], check=True)
    with np.load(folder / "calib.npz") as z:
        calib = z["image"]
    with np.load(folder / "test.npz") as z:
        x, y = z["image"][:args.mnist_test], z["labels"][:args.mnist_test]
    return Prepared(folder / "fp32.onnx", calib, x, [int(v) for v in y], "accuracy",
                    f"scripts/train_mnist.py --variant {variant} --cosine (2 epochs), "
                    f"{folder.relative_to(ROOT)}/fp32.onnx",
                    "MNIST digits, top-1 accuracy",
                    {"calibration": f"{len(calib)} MNIST training images (calib.npz)",
                     "test": f"first {len(x)} MNIST test images"})


def _ocr_source(name: str) -> tuple[Path, str]:
    import importlib.metadata

    return _real(name), f"rapidocr-onnxruntime {importlib.metadata.version('rapidocr-onnxruntime')}"


def _rec(args) -> Prepared:
    import onnx

    src, package = _ocr_source("ppocr_rec")
    meta = {m.key: m.value for m in onnx.load(str(src), load_external_data=False).metadata_props}
    chars = ["blank", *meta["character"].splitlines(), " "]
    calib, _ = lines(args.ocr_calib, seed=1)
    x, texts = lines(args.ocr_test, seed=2)
    return Prepared(src, calib, x, texts, "exact_match",
                    f"{package} {src.name} (PP-OCRv4 recogniser, paddle2onnx)",
                    "exact match of recognised strings (greedy CTC, the model's dictionary) on "
                    "rendered text lines (bench_real_ocr.py's renderer and metric)",
                    {"calibration": f"{len(calib)} rendered lines (seed 1), unlabeled",
                     "test": f"{len(x)} rendered lines (seed 2), 5-12 characters, 3x48x320"},
                    {"chars": chars})


def direction_lines(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """n rendered lines (bench_real_ocr.lines) as rapidocr feeds its direction classifier:
    each cropped to its ink plus a margin, turned 180 degrees for label 1 (about half),
    resized to at most 192 wide and zero-padded to 3x48x192."""
    from PIL import Image

    x, _ = lines(n, seed)
    flip = np.random.default_rng(seed + 1000).integers(0, 2, n)
    out = np.zeros((n, 3, 48, 192), np.float32)
    for i, (img, f) in enumerate(zip(x[:, 0], flip)):
        ink = np.flatnonzero((img < 0.9).any(axis=0))
        crop = img[:, :min(img.shape[1], int(ink[-1]) + 9 if len(ink) else img.shape[1])]
        if f:
            crop = crop[::-1, ::-1]
        if crop.shape[1] > 192:
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(
                (192, 48), Image.BILINEAR), np.float32)
        out[i, :, :, :crop.shape[1]] = crop
    return out, [int(f) for f in flip]


def _cls(args) -> Prepared:
    src, package = _ocr_source("ppocr_cls")
    calib, _ = direction_lines(args.ocr_calib, seed=3)
    x, labels = direction_lines(args.cls_test, seed=4)
    return Prepared(src, calib, x, labels, "accuracy",
                    f"{package} {src.name} (PP-OCR mobile v2 direction classifier, paddle2onnx)",
                    "text direction (0 or 180 degrees), top-1 accuracy on rendered lines",
                    {"calibration": f"{len(calib)} rendered lines (seed 3), about half turned, "
                                    "unlabeled",
                     "test": f"{len(x)} rendered lines (seed 4), {sum(labels)} turned 180, "
                             "3x48x192"})


def magika_features(path: str, cfg: dict) -> np.ndarray:
    """Magika's model input for one file, from its config: the first `beg_size` bytes of
    the first `block_size` with leading whitespace stripped, padded after with
    `padding_token`; the last `end_size` bytes of the last block with trailing whitespace
    stripped, padded before."""
    size = os.path.getsize(path)
    block = min(cfg["block_size"], size)
    with open(path, "rb") as fh:
        head = fh.read(block)
        fh.seek(size - block)
        tail = fh.read(block)
    head = head.lstrip()[:cfg["beg_size"]]
    tail = tail.rstrip()
    tail = tail[len(tail) - cfg["end_size"]:] if len(tail) > cfg["end_size"] else tail
    pad = cfg["padding_token"]
    beg = list(head) + [pad] * (cfg["beg_size"] - len(head))
    end = [pad] * (cfg["end_size"] - len(tail)) + list(tail)
    return np.asarray(beg + end, np.int32)


def magika_files(per_type: int) -> dict[str, list[str]]:
    """Up to `per_type` files of each type of MAGIKA_TYPES under MAGIKA_ROOTS, in an order
    fixed by the hash of their paths: regular files of at least 512 bytes, with the type's
    leading bytes (.txt is left out: such files hold Markdown, reST, INI or CMake as often
    as plain text)."""
    label_of = {ext: label for label, (exts, _) in MAGIKA_TYPES.items() for ext in exts}
    found: dict[str, list[str]] = {label: [] for label in MAGIKA_TYPES}
    for root in MAGIKA_ROOTS:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for f in files:
                label = label_of.get(os.path.splitext(f)[1].lower())
                if label:
                    found[label].append(os.path.join(folder, f))
    chosen = {}
    for label, paths in found.items():
        keep: list[str] = []
        for p in sorted(set(paths), key=lambda p: hashlib.sha256(p.encode()).hexdigest()):
            if len(keep) == per_type:
                break
            if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) < 512:
                continue
            magic = MAGIKA_TYPES[label][1]
            with open(p, "rb") as fh:
                if fh.read(len(magic)) != magic:
                    continue
            keep.append(p)
        chosen[label] = keep
    return chosen


def _magika(args) -> Prepared:
    import importlib.metadata

    src = _real("magika")
    cfg = json.loads((src.parent / "config.min.json").read_text())
    space = cfg["target_labels_space"]
    files = magika_files(args.magika_calib + args.magika_test)
    calib, x, truth, seen, used = [], [], [], set(), {}
    for label, paths in files.items():
        feats = []
        for p in paths:
            f = magika_features(p, cfg)
            if f.tobytes() not in seen:
                seen.add(f.tobytes())
                feats.append(f)
        calib += feats[:args.magika_calib]
        x += feats[args.magika_calib:]
        truth += [space.index(label)] * len(feats[args.magika_calib:])
        used[label] = len(feats[args.magika_calib:])
    return Prepared(src, np.stack(calib), np.stack(x), truth, "accuracy",
                    f"magika {importlib.metadata.version('magika')} "
                    "models/standard_v3_3/model.onnx (tf2onnx)",
                    "file type of real files, top-1 accuracy against the type known from the "
                    "extension (and magic bytes for binary formats)",
                    {"calibration": f"{len(calib)} real files, {args.magika_calib} per type, "
                                    "unlabeled",
                     "test": f"{len(x)} other real files of {len(used)} types "
                             f"(from {', '.join(MAGIKA_ROOTS)})",
                     "test_files_per_type": used})


TASKS: dict[str, Callable] = {**{name: (lambda args, n=name: _mnist(n, args)) for name in MNIST},
                              "ppocr_rec": _rec, "ppocr_cls": _cls, "magika": _magika}


# ---- evaluation and file statistics (in .venv-newest) --------------------------------------

class Session:
    """onnxruntime on the CPU at its default optimization level (or with optimizations off),
    running a batch in chunks of the file's static batch size where it has one (Model
    Optimizer's files)."""

    def __init__(self, model, optimize: bool = True) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        source = model if isinstance(model, (str, bytes)) else model.SerializeToString()
        self.session = ort.InferenceSession(source, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        dim = self.session.get_inputs()[0].shape[0]
        self.batch = dim if isinstance(dim, int) and dim > 0 else None

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds: dict) -> list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        step = self.batch or 256
        parts = [self.session.run(names, {k: v[i:i + step] for k, v in feeds.items()})
                 for i in range(0, n, step)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


@contextlib.contextmanager
def ort_sessions(optimize: bool):
    """bench_real_ocr.exact_match opens its session through qdq_onnx.graph.sessions (with
    .venv's onnxruntime 1.19, optimizations off); here it gets a Session instead."""
    import onnx  # noqa: F401  (patch.dict restores sys.modules whole: onnx loads before)

    name = "qdq_onnx.graph.sessions"
    stand_in = types.ModuleType(name)
    stand_in.inference_session = lambda model, **_: Session(model, optimize)
    with mock.patch.dict(sys.modules, {name: stand_in}):
        yield


def run_shapes(model, names: list[str], sample: np.ndarray) -> dict[str, list[int]]:
    """The shapes of tensors `names` in one onnxruntime run of `model` on `sample`."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in have)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    out = session.run(wanted, {session.get_inputs()[0].name: sample})
    return {t: list(v.shape) for t, v in zip(wanted, out)}


def file_stats(path: str, sample: np.ndarray) -> dict:
    """Compute layers, MACs per precision, Casts and Q/DQ of one file, at batch 1 and the
    data's shape: onnx shape inference, and for what it leaves unknown (paddle2onnx's
    computed Reshapes), the shapes of one onnxruntime run on `sample`."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in inits)
    for d, v in zip(graph_input.type.tensor_type.shape.dim, sample.shape):
        d.ClearField("dim_param")
        d.dim_value = v
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    info: dict[str, tuple[int, list | None]] = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        t = vi.type.tensor_type
        info[vi.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else None
                                       for d in t.shape.dim] if t.HasField("shape") else None)
    for init in model.graph.initializer:
        info[init.name] = (init.data_type, list(init.dims))
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            info[n.output[0]] = (n.attribute[0].t.data_type, list(n.attribute[0].t.dims))
    def known(name: str) -> bool:
        # a dim_value <= 0 is no size: paddle2onnx writes -1 for its dynamic dimensions
        s = info.get(name, (0, None))[1]
        return bool(s) and all(d is not None and d > 0 for d in s)

    missing = [t for n in model.graph.node if n.op_type in COMPUTE
               for t in (n.input[0], n.input[1], n.output[0]) if not known(t)]
    if missing:
        for t, s in run_shapes(model, missing, sample).items():
            info[t] = (info.get(t, (0, None))[0], s)
    producer = {o: n for n in model.graph.node for o in n.output}
    qtypes = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
              TensorProto.FLOAT8E4M3FN: "fp8"}
    ftypes = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16",
              TensorProto.BFLOAT16: "bf16"}

    def through_dq(name: str) -> str | None:
        node = producer.get(name)
        while node is not None and node.op_type in THROUGH:
            node = producer.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            return None
        return qtypes.get(info.get(node.input[0], (0, None))[0])

    def shape(name: str) -> list | None:
        return info[name][1] if known(name) else None

    def macs(n) -> int | None:
        a, w, y = shape(n.input[0]), shape(n.input[1]), shape(n.output[0])
        if n.op_type == "Conv" and y and w:
            return math.prod(y) * math.prod(w[1:])
        if n.op_type == "ConvTranspose" and a and w:
            return math.prod(a) * math.prod(w[1:])
        if n.op_type == "MatMul" and y and a:
            return math.prod(y) * a[-1]
        if n.op_type == "Gemm" and y and a:
            trans = any(x.name == "transA" and x.i for x in n.attribute)
            return math.prod(y) * a[0 if trans else -1]
        return None

    by_precision: dict[str, int] = {}
    layers: dict[str, int] = {}
    unknown = 0
    for n in model.graph.node:
        if n.op_type not in COMPUTE:
            continue
        q = [through_dq(t) for t in n.input[:2]]
        precision = q[0] if q[0] and q[0] == q[1] else \
            ftypes.get(info.get(n.output[0], (0, None))[0], "other")
        layers[precision] = layers.get(precision, 0) + 1
        m = macs(n)
        if m is None:
            unknown += 1
        else:
            by_precision[precision] = by_precision.get(precision, 0) + m
    total = sum(by_precision.values())
    quantized = {TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT8E4M3FN}

    def quantized_source(name: str) -> bool:  # a QuantizeLinear, or stored quantized values
        node = producer.get(name)
        if node is not None and node.op_type == "QuantizeLinear":
            return True
        stored = name in inits or (node is not None and node.op_type == "Constant")
        return stored and info.get(name, (0, None))[0] in quantized

    pairs = sum(n.op_type == "DequantizeLinear" and quantized_source(n.input[0])
                for n in model.graph.node)
    ops = [n.op_type for n in model.graph.node]
    return {"int8_mac_share": by_precision.get("int8", 0) / total if total else 0.0,
            "macs": total, "macs_by_precision": by_precision,
            "compute_layers": sum(layers.values()), "layers_by_precision": layers,
            "layers_without_shapes": unknown, "casts": ops.count("Cast"),
            "qdq_pairs": int(pairs), "quantize_linear": ops.count("QuantizeLinear"),
            "dequantize_linear": ops.count("DequantizeLinear")}


def task_metric(path: str, x: np.ndarray, meta: dict, optimize: bool) -> float:
    if meta["kind"] == "exact_match":
        with ort_sessions(optimize):
            return exact_match(Path(path), x, meta["truth"], meta["chars"])
    session = Session(path, optimize)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.mean(out.reshape(len(x), -1).argmax(-1) == np.asarray(meta["truth"])))


def evaluate(path: str, folder: str) -> dict:
    """The task metric at onnxruntime's default optimization level and with optimizations
    off, and the file statistics, of one file (run in .venv-newest)."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    with np.load(Path(folder) / "test.npz") as z:
        x = z["x"]
    return {"metric": task_metric(path, x, meta, True),
            "metric_optimizations_off": task_metric(path, x, meta, False),
            **file_stats(path, x[:1])}


def ort_quantize(src: str, calib: str, out: str) -> None:
    """onnxruntime's quantize_static on the calibration data, in batches of 32."""
    import onnx

    name = next(i.name for i in onnx.load(src, load_external_data=False).graph.input)
    with np.load(calib) as z:
        data = z[name]
    ort_quantize_static(src, out, [{name: data[i:i + 32]} for i in range(0, len(data), 32)])


# ---- the driver ----------------------------------------------------------------------------

def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def tree_digest(*folders: Path) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def git_state() -> str:
    """HEAD, and whether qdq_onnx/ or rules/ differ from it."""
    try:
        head = output_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = output_of(["git", "-C", str(ROOT), "status", "--porcelain", "qdq_onnx", "rules"])
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {head}" + (" with uncommitted changes to qdq_onnx/ or rules/" if dirty else "")


def output_of(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def static_copy(src: Path, dst: Path, sample_shape: tuple[int, ...]) -> Path:
    """A copy whose input has batch 1 and the data's shape, and whose outputs have batch 1
    (Model Optimizer wants static shapes)."""
    import onnx

    m = onnx.load(str(src))
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name not in inits:
            for d, v in zip(vi.type.tensor_type.shape.dim, [1, *sample_shape]):
                d.ClearField("dim_param")
                d.dim_value = v
    for vi in m.graph.output:
        d = vi.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    onnx.save(m, str(dst))
    return dst


def quantize(tool: str, prep: Prepared, folder: Path, tool_key: str, args,
             spec: Path | None = None, name: str | None = None) -> dict:
    """The tool's file for this model (reused when its key matches), its wall time; for
    qdq-onnx, `spec` adds `--spec SPEC` (part of the key) and `name` names the file."""
    out = folder / f"{name or tool}.onnx"
    record = folder / f"{name or tool}.json"
    key = digest(tool_key, (folder / "data.key").read_text(),
                 *([spec.read_text()] if spec is not None else []))
    if not args.fresh and out.exists() and record.exists():
        done = json.loads(record.read_text())
        if done.get("key") == key:
            return {**done, "path": str(out), "reused": True}
    out.unlink(missing_ok=True)
    if tool == "qdq-onnx":
        cmd = [*QDQ, "insert", str(prep.src), "--calib", str(folder / "calib.npz"),
               *(["--spec", str(spec)] if spec is not None else []), "-o", str(out)]
    elif tool == "onnxruntime":
        cmd = [str(NEWEST), __file__, "_ort-quantize", str(prep.src), str(folder / "calib.npz"),
               str(out)]
    else:
        static = static_copy(prep.src, folder / "static_b1.onnx", prep.x.shape[1:])
        cmd = [args.modelopt_python, "-c", _MODELOPT, str(static), str(folder / "calib.npy"),
               str(out)]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=args.timeout)
        error = done.stderr.strip()[-600:] if done.returncode or not out.exists() else None
    except subprocess.TimeoutExpired:
        error = f"timed out after {args.timeout} s"
    seconds = round(time.perf_counter() - start, 1)
    if error:
        print(f"  {tool} failed: {error}", file=sys.stderr, flush=True)
        return {"error": error, "seconds": seconds}
    record.write_text(json.dumps({"key": key, "seconds": seconds}))
    return {"key": key, "seconds": seconds, "path": str(out), "reused": False}


def tool_keys(onnxruntime_version: str, modelopt_python: str | None
              ) -> tuple[dict[str, str], str | None]:
    """What each tool's files are keyed by (a file is reused while its key holds): the
    qdq-onnx source, onnxruntime's version and our call of it, Model Optimizer's version
    and our call of it (when its Python is given); and Model Optimizer's version."""
    keys = {"qdq-onnx": "qdq-onnx " + tree_digest(ROOT / "qdq_onnx", ROOT / "rules"),
            "onnxruntime": f"onnxruntime {onnxruntime_version} "
                           + digest(inspect.getsource(ort_quantize_static),
                                    inspect.getsource(ort_quantize))}
    version = None
    if modelopt_python:
        version = output_of([modelopt_python, "-c", "import importlib.metadata as m; "
                             "print(m.version('nvidia-modelopt'))"])
        keys["modelopt"] = f"modelopt {version} " + digest(_MODELOPT)
    return keys, version


def measure(path: str, folder: Path) -> dict:
    done = subprocess.run([str(NEWEST), __file__, "_evaluate", path, str(folder)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        return {"error": f"evaluation failed: {done.stderr.strip()[-600:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare_folder(name: str, prep: Prepared, out_dir: Path) -> Path:
    """<out-dir>/<model>/: calib.npz (named after the input), calib.npy, test.npz,
    meta.json, and data.key (what the calibration data and the float file hash to)."""
    import onnx

    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    input_name = next(i.name for i in onnx.load(str(prep.src), load_external_data=False)
                      .graph.input)
    np.savez(folder / "calib.npz", **{input_name: prep.calib})
    np.save(folder / "calib.npy", prep.calib)
    np.savez(folder / "test.npz", x=prep.x)
    (folder / "meta.json").write_text(json.dumps({"kind": prep.kind, "truth": prep.truth,
                                                  **prep.extra}))
    (folder / "data.key").write_text(digest(prep.calib.tobytes(), str(prep.calib.shape),
                                            prep.src.read_bytes()))
    return folder


def fmt(v: float | None, pct: bool = True) -> str:
    return "-" if v is None else f"{v * 100:.2f}" if pct else str(v)


def table(models: dict) -> str:
    rows = ["| model | tool | task metric (%) | vs float (pt) | optimizations off (%) "
            "| INT8 share of MACs | INT8 layers | Casts | Q/DQ pairs | quantize s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in models.items():
        base = entry["rows"]["float"].get("metric")
        for tool, r in entry["rows"].items():
            if "error" in r:
                rows.append(f"| {name} | {tool} | failed: {r['error'].splitlines()[-1][:80]} "
                            "| | | | | | | |")
                continue
            delta = "-" if tool == "float" or base is None else \
                f"{(r['metric'] - base) * 100:+.2f}"
            int8 = r["layers_by_precision"].get("int8", 0)
            rows.append(f"| {name} | {tool} | {fmt(r['metric'])} | {delta} | "
                        f"{fmt(r['metric_optimizations_off'])} | "
                        f"{fmt(r['int8_mac_share'])}% | {int8} of {r['compute_layers']} | "
                        f"{r['casts']} | {r['qdq_pairs']} | {r.get('seconds', '-')} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modelopt-python", help="a Python with nvidia-modelopt installed (its "
                   "column is left out, with a note, without it)")
    p.add_argument("--models", default=",".join(TASKS),
                   help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    p.add_argument("--out-dir", default=str(ROOT / "out" / "bench" / "ptq_peers"),
                   help="quantized files and data (kept: reruns reuse what is unchanged)")
    p.add_argument("--mnist-test", type=int, default=10000, help="MNIST test images")
    p.add_argument("--ocr-calib", type=int, default=128, help="rendered calibration lines")
    p.add_argument("--ocr-test", type=int, default=200, help="rendered test lines (recogniser)")
    p.add_argument("--cls-test", type=int, default=400,
                   help="rendered test lines (direction classifier)")
    p.add_argument("--magika-calib", type=int, default=4, help="calibration files per type")
    p.add_argument("--magika-test", type=int, default=10, help="test files per type")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per quantizer run")
    p.add_argument("--fresh", action="store_true", help="requantize everything")
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(TASKS)}")
    if not NEWEST.exists():
        raise SystemExit(f"{NEWEST} is missing: the evaluator (make installs it)")
    started = time.perf_counter()
    out_dir = Path(args.out_dir).resolve()
    newest = json.loads(output_of([str(NEWEST), "-c", "import json, platform, onnx, "
                                   "onnxruntime as o, numpy; print(json.dumps({'python': "
                                   "platform.python_version(), 'onnx': onnx.__version__, "
                                   "'onnxruntime': o.__version__, 'numpy': numpy.__version__}))"]))
    keys, modelopt_version = tool_keys(newest["onnxruntime"], args.modelopt_python)
    tools = list(keys)
    notes = [] if modelopt_version else \
        ["Model Optimizer column left out: no --modelopt-python given"]
    models: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        prep = TASKS[name](args)
        folder = prepare_folder(name, prep, out_dir)
        rows = {"float": measure(str(prep.src), folder)}
        f = rows["float"]
        print("  float        " + (f["error"].splitlines()[-1][:200] if "error" in f else
                                   f"{f['metric'] * 100:6.2f} (optimizations off "
                                   f"{f['metric_optimizations_off'] * 100:6.2f})"), flush=True)
        for tool in tools:
            q = quantize(tool, prep, folder, keys[tool], args)
            rows[tool] = q if "error" in q else {**measure(q["path"], folder),
                                                 "seconds": q["seconds"]}
            r = rows[tool]
            print(f"  {tool:12} " + (r["error"].splitlines()[-1][:200] if "error" in r else
                                     f"{r['metric'] * 100:6.2f} (optimizations off "
                                     f"{r['metric_optimizations_off'] * 100:6.2f})  INT8 MACs "
                                     f"{r['int8_mac_share'] * 100:5.1f}%  Casts {r['casts']}  "
                                     f"Q/DQ pairs {r['qdq_pairs']}  {r['seconds']} s"
                                     + (" (file reused)" if q.get("reused") else "")),
                  flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s for {name})", flush=True)
        models[name] = {"source": prep.source, "task": prep.task, "data": prep.data,
                        "date": time.strftime("%Y-%m-%d"), "rows": rows}
    previous = RESULTS / "ptq_peers.json"
    if previous.exists():  # models not run this time keep their last measured figures
        kept = json.loads(previous.read_text()).get("models", {})
        for name, entry in kept.items():
            if name not in models:
                models[name] = entry
                notes.append(f"{name}: kept from the run of {entry.get('date', '?')}")
    from bench_common import machine_info

    result = {
        "versions": {**machine_info()["versions"],
                     "evaluator (.venv-newest)": newest,
                     **({"nvidia-modelopt": modelopt_version} if modelopt_version else {})},
        "tools": {
            "qdq-onnx": "qdq-onnx insert MODEL --calib CALIB.npz -o OUT (defaults), at "
                        f"{git_state()} (source hash {keys['qdq-onnx'].split()[-1]}, taken at "
                        "the start of the run)",
            "onnxruntime": f"onnxruntime {newest['onnxruntime']} quantize_static: QDQ, MinMax, "
                           "symmetric int8 activations and weights, per channel, batches of 32",
            **({"modelopt": f"nvidia-modelopt {modelopt_version} "
                            "modelopt.onnx.quantization.quantize(quantize_mode='int8', "
                            "calibration_eps=['cpu']), defaults otherwise, on a static batch-1 "
                            "copy"} if modelopt_version else {})},
        "evaluation": f"onnxruntime {newest['onnxruntime']} (.venv-newest), CPU, default graph "
                      "optimization level ('metric'), and with graph optimizations off "
                      "('metric_optimizations_off', ORT_DISABLE_ALL: what the graph itself "
                      "computes); Model Optimizer's static batch-1 files run sample by sample",
        "definitions": {
            "int8_mac_share": "MACs of Conv/ConvTranspose/MatMul/Gemm whose first two inputs "
                              "come through DequantizeLinear of int8 (through Cast and layout "
                              "ops at most), over all their MACs; shapes from onnx shape "
                              "inference at batch 1 and the test data's shape",
            "qdq_pairs": "DequantizeLinear nodes fed by a QuantizeLinear or by stored "
                         "quantized weights",
            "casts": "Cast nodes in the file as written",
            "seconds": "wall time of the quantizer's whole command, interpreter start "
                       "included (2 shared cores)"},
        "settings": {k: v for k, v in vars(args).items() if k not in ("fresh",)},
        "notes": notes,
        "seconds": round(time.perf_counter() - started),
        "models": models}
    path = write_result("ptq_peers", result)
    print()
    print(table(models))
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_evaluate":
        print(json.dumps(evaluate(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_ort-quantize":
        ort_quantize(*sys.argv[2:5])
    else:
        sys.exit(main())
