"""Helpers with the original toolkit's names: asset folders and Keras -> ONNX conversion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qdq_onnx import pipeline
from qdq_onnx.pipeline import plumbing


def convert_keras_model_to_onnx(model: Any, onnx_path: str | os.PathLike,
                                opset: int | None = None) -> Path:
    """Convert an in-memory Keras model (functional, Sequential or subclassed) to ONNX."""
    plumbing.check_output(onnx_path)
    return pipeline.save(pipeline.convert(model, opset=opset), onnx_path,
                         check="the converted model")


def convert_saved_model_to_onnx(saved_model_dir: str | os.PathLike,
                                onnx_path: str | os.PathLike, opset: int | None = None) -> Path:
    """Convert a saved Keras model (.keras/.h5 file or SavedModel folder) to ONNX."""
    plumbing.check_output(onnx_path)
    return pipeline.save(pipeline.convert(saved_model_dir, opset=opset), onnx_path,
                         check="the converted model")


class _Assets:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.fp32_saved_model = str(root / "fp32" / "saved_model.keras")
        self.int8_saved_model = str(root / "int8" / "saved_model.keras")
        self.fp32_onnx_model = str(root / "fp32" / "original.onnx")
        self.int8_onnx_model = str(root / "int8" / "quantized.onnx")
        for sub in ("fp32", "int8"):
            (root / sub).mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"assets({self.root})"


class CreateAssetsFolders:
    """Folders for a quantization experiment: `assets.example.fp32_onnx_model`, ...

    `assets.add_folder(name)` adds another set. Keras 3 saves models as `.keras` files, so the
    "saved model" paths end in `.keras`; `convert_saved_model_to_onnx` reads them."""

    def __init__(self, name: str, base: str | os.PathLike | None = None) -> None:
        root = Path(base if base is not None else os.environ.get("QDQ_ONNX_ASSETS", "assets"))
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.example = _Assets(self.root / "example")

    def add_folder(self, name: str) -> None:
        setattr(self, name, _Assets(self.root / name))
