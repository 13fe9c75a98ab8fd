"""Image folders as model inputs: one sub-folder per class (Keras's
`image_dataset_from_directory` layout), decoded with Pillow a batch at a time, resized to the
model's input and normalised the way `keras.applications` models expect.

Normalisation conventions (keras.applications `imagenet_utils.preprocess_input` modes):
`tf` scales to [-1, 1]; `torch` scales to [0, 1] then subtracts the ImageNet mean
(0.485, 0.456, 0.406) and divides by its std (0.229, 0.224, 0.225); `caffe` flips RGB to
BGR and subtracts the ImageNet BGR mean (103.939, 116.779, 123.68) without scaling; `none`
keeps 0-255 floats (models that rescale inside, like EfficientNet). An explicit `mean`/`std`
(0-255 scale, per channel) replaces the convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdq_onnx.errors import QdqError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})
PREPROCESS = ("none", "tf", "torch", "caffe")
_TORCH_MEAN, _TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def is_image_folder(path: Path) -> bool:
    """A folder with class sub-folders holding images and no numpy files of its own."""
    if not path.is_dir() or any(path.glob("*.np[yz]")):
        return False
    return any(f.suffix.lower() in IMAGE_SUFFIXES for d in path.iterdir() if d.is_dir()
               for f in d.iterdir())


@dataclass(frozen=True)
class ImageFolder:
    """An image folder to read as model input, with its normalisation: `preprocess` one of
    none/tf/torch/caffe, or an explicit per-channel `mean` and `std` on the 0-255 scale.
    Size and layout (NHWC or NCHW, 1 or 3 channels) come from the model input it feeds."""

    path: str | Path
    preprocess: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS:
            raise QdqError(f"unknown image preprocessing {self.preprocess!r}; use one of "
                           f"{', '.join(PREPROCESS)}")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and (len(v) not in (1, 3) or not all(np.isfinite(v))):
                raise QdqError(f"image {name} must be 1 or 3 finite numbers, got {v}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise QdqError(f"image std must be positive, got {self.std}")

    def __str__(self) -> str:
        return str(self.path)

    def arrays(self) -> dict[str, Any]:
        """{"": the images (sized when matched to a model input), "labels": class indices
        in the sorted order of the class folder names}."""
        root = Path(self.path)
        if not root.is_dir():
            raise QdqError(f"{root}: no such image folder")
        files, labels = [], []
        for k, name in enumerate(self.class_names()):
            found = sorted(f for f in (root / name).iterdir()
                           if f.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [k] * len(found)
        if not files:
            raise QdqError(f"{root}: no images (.jpg, .png, .bmp, .gif) in class sub-folders")
        return {"": ImageArray(files, self, str(root)),
                "labels": np.asarray(labels, np.int64)}

    def inputs_and_labels(self) -> tuple[dict[str, Any], np.ndarray]:
        """({"": the images}, the class labels), as `fit(x, y)` takes them."""
        arrays = self.arrays()
        return {"": arrays[""]}, arrays["labels"]

    def class_names(self) -> list[str]:
        """The class folder names in label order (sorted, as Keras orders them)."""
        return sorted(d.name for d in Path(self.path).iterdir() if d.is_dir())


class ImageArray:
    """Images decoded on access (`array[rows]`): shape (N, H, W, C) or (N, C, H, W) once
    bound to a model input; float32, normalised, NaN-free by construction."""

    def __init__(self, files: list[Path], folder: ImageFolder, what: str,
                 dims: tuple[int, ...] | None = None) -> None:
        self.files, self.folder, self.what = files, folder, what
        self.dtype = np.dtype(np.float32)
        self.shape: tuple[int, ...] = (len(files), *(dims or ())[1:])
        self.ndim = len(self.shape)
        self.channels_first = dims is not None and _channels_first(dims)

    def bind(self, dims: tuple[int | None, ...], name: str) -> ImageArray:
        """This folder sized for a model input of shape `dims` (batch first)."""
        if len(dims) != 4 or None in dims[1:]:
            raise QdqError(f"{self.what}: an image folder feeds a 4-D input with known height, "
                           f"width and channels; input {name!r} is {list(dims)}")
        if (dims[1] if _channels_first(dims) else dims[-1]) not in (1, 3):
            raise QdqError(f"{self.what}: input {name!r} {list(dims)} has no 1- or 3-channel "
                           "axis first or last; images cannot feed it")
        return ImageArray(self.files, self.folder, self.what, tuple(dims))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: Any) -> np.ndarray:
        if len(self.shape) == 1:
            raise QdqError(f"{self.what}: the image folder is not matched to a model input")
        rows = np.arange(len(self.files))[index]
        out = np.stack([self._decode(self.files[int(r)]) for r in np.atleast_1d(rows)])
        return out[0] if np.ndim(rows) == 0 else out

    def _decode(self, path: Path) -> np.ndarray:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as err:
            raise QdqError("reading an image folder needs Pillow: pip install "
                           "'qdq-onnx[images]'") from err

        if self.channels_first:
            channels, height, width = self.shape[1:]
        else:
            height, width, channels = self.shape[1:]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                if img.size != (width, height):
                    img = img.resize((width, height), Image.BILINEAR)
                x = np.asarray(img, np.float32).reshape(height, width, channels)
        except (OSError, UnidentifiedImageError) as exc:
            raise QdqError(f"{path}: not a readable image ({exc})") from exc
        x = normalise(x, self.folder)
        return np.ascontiguousarray(x.transpose(2, 0, 1)) if self.channels_first else x


def _channels_first(dims: tuple) -> bool:
    """NCHW when the 1- or 3-channel axis can only be axis 1 (NHWC wins a tie)."""
    return dims[1] in (1, 3) and dims[-1] not in (1, 3)


def normalise(x: np.ndarray, folder: ImageFolder) -> np.ndarray:
    """0-255 HWC pixels -> the model's input convention (see the module docstring)."""
    if folder.mean is not None or folder.std is not None:
        mean = np.asarray(folder.mean if folder.mean is not None else (0.0,), np.float32)
        std = np.asarray(folder.std if folder.std is not None else (1.0,), np.float32)
        return ((x - mean) / std).astype(np.float32)
    if folder.preprocess == "tf":
        return x / 127.5 - 1.0
    if folder.preprocess == "torch":
        return ((x / 255.0 - _TORCH_MEAN[:x.shape[-1]]) / _TORCH_STD[:x.shape[-1]]
                ).astype(np.float32)
    if folder.preprocess == "caffe":
        bgr = x[..., ::-1] if x.shape[-1] == 3 else x
        return (bgr - _CAFFE_BGR_MEAN[:x.shape[-1]]).astype(np.float32)
    return x
