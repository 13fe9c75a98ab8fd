"""Data given as an iterable of batches: generators, lists of batches, `tf.data.Dataset`,
`keras.utils.PyDataset`. Each element is `x`, `(x, y)` or `(x, y, sample_weight)`, with `x`
an array or a dict of arrays by input name; tensors are read through `.numpy()` without
importing TensorFlow.

For training, the batches are consumed once and spilled to disk as raw arrays that are
then memory-mapped: RAM stays bounded by one batch, and the training loop keeps its
index shuffling and exact resume, which a one-way stream cannot give."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdq_onnx.errors import QdqError

# Arrays given by position (a list or tuple, Keras order) are keyed "@0", "@1", ... until
# they meet the model, whose graph inputs they are matched to in order.
POSITION = "@{}"


def _array_like(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and len(getattr(v, "shape", ())) >= 1


def is_positional(x: Any) -> bool:
    """Whether `x` is several inputs given by position: a list or tuple of two or more
    arrays (or tensors) with the same number of samples, as Keras takes `[images, meta]`."""
    if not isinstance(x, (list, tuple)) or len(x) < 2 or not all(map(_array_like, x)):
        return False
    return len({v.shape[0] for v in x}) == 1


def as_named(x: Any) -> dict[str, Any]:
    """The inputs in `x` by name: a dict as it is, a positional list/tuple keyed by
    position, one array under ""."""
    if isinstance(x, dict):
        return dict(x)
    if is_positional(x):
        return {POSITION.format(i): v for i, v in enumerate(x)}
    return {"": x}


def is_batch_source(data: Any) -> bool:
    """True for an iterable of batches, False for arrays, dicts of arrays and paths."""
    if isinstance(data, (np.ndarray, dict, str, bytes, os.PathLike)):
        return False
    if hasattr(data, "element_spec"):  # tf.data.Dataset
        return True
    if isinstance(data, (list, tuple)):
        # a list of batches; a nested list of numbers is one array
        return bool(data) and isinstance(data[0], (tuple, list, dict, np.ndarray)) \
            and not _is_numeric_nest(data)
    return hasattr(data, "__iter__")


def _is_numeric_nest(data: Any) -> bool:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        return False
    return arr.dtype != object and np.issubdtype(arr.dtype, np.number)


def to_numpy(value: Any) -> Any:
    """Arrays and dicts of arrays from tensors (`.numpy()`), lists or arrays."""
    if isinstance(value, dict):
        return {str(k): to_numpy(v) for k, v in value.items()}
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)


def split_batch(item: Any, where: str) -> tuple[Any, np.ndarray | None]:
    """(x, y or None) of one element: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`."""
    if isinstance(item, (tuple, list)):
        if not 1 <= len(item) <= 3:
            raise QdqError(f"{where}: a batch must be x, (x, y) or (x, y, sample_weight); "
                           f"got a {type(item).__name__} of {len(item)} elements")
        if len(item) == 3 and item[2] is not None:
            raise QdqError(f"{where}: sample weights are not supported")
        x = to_numpy(item[0])
        y = to_numpy(item[1]) if len(item) > 1 and item[1] is not None else None
        return x, y
    return to_numpy(item), None


def iter_batches(data: Any, where: str, max_batches: int | None = None
                 ) -> Iterator[tuple[Any, np.ndarray | None]]:
    """(x, y) of each element of `data`, at most `max_batches`."""
    for i, item in enumerate(data):
        if max_batches is not None and i >= max_batches:
            return
        yield split_batch(item, f"{where} batch {i}")


class _Column:
    """One array written batch by batch to a raw file."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.file = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def add(self, batch: np.ndarray, where: str) -> None:
        if batch.ndim == 0:
            raise QdqError(f"{where}: {self.what} is a scalar, expected a batch")
        if self.dtype is None:
            if not np.issubdtype(batch.dtype, np.number) and batch.dtype != np.bool_:
                raise QdqError(f"{where}: {self.what} has dtype {batch.dtype}, expected numbers")
            self.dtype, self.shape = batch.dtype, batch.shape[1:]
        elif batch.shape[1:] != self.shape:
            raise QdqError(f"{where}: {self.what} has shape {list(batch.shape)}, earlier "
                           f"batches had [N, {', '.join(map(str, self.shape))}]")
        self.file.write(np.ascontiguousarray(batch, dtype=self.dtype).tobytes())
        self.count += batch.shape[0]

    def finish(self) -> np.ndarray:
        self.file.close()
        if self.count == 0:
            raise QdqError(f"{self.what}: no samples")
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count, *self.shape))


def spill(data: Any, folder: str | os.PathLike, where: str, need_labels: bool = True,
          max_batches: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Write the batches of `data` under `folder` and return them memory-mapped: (inputs by
    name, '' for a single unnamed array; labels or None)."""
    folder = Path(folder)
    xs: dict[str, _Column] = {}
    opened: list[_Column] = []
    try:
        ys = _write(data, folder, where, max_batches, xs, opened)
    except BaseException:
        for c in opened:
            c.file.close()
        raise
    if not xs:
        raise QdqError(f"{where}: the iterable gave no batches")
    if need_labels and ys is None:
        raise QdqError(f"{where}: the batches carry no labels; give (x, y) batches")
    return {k: c.finish() for k, c in xs.items()}, (ys.finish() if ys is not None else None)


def _write(data: Any, folder: Path, where: str, max_batches: int | None,
           xs: dict[str, _Column], opened: list[_Column]) -> _Column | None:
    ys: _Column | None = None
    for i, (x, y) in enumerate(iter_batches(data, where, max_batches)):
        at = f"{where} batch {i}"
        arrays = as_named(x)
        if i == 0:
            for k in arrays:
                xs[k] = _Column(folder / f"x{len(xs)}.raw", f"input {k!r}" if k else "x")
                opened.append(xs[k])
        elif set(arrays) != set(xs):
            raise QdqError(f"{at}: inputs {sorted(arrays)}, earlier batches had {sorted(xs)}")
        counts = {v.shape[0] for v in arrays.values() if v.ndim}
        if y is not None:
            counts.add(y.shape[0] if y.ndim else -1)
        if len(counts) > 1:
            raise QdqError(f"{at}: inputs and labels have different batch sizes {sorted(counts)}")
        for k, v in arrays.items():
            xs[k].add(v, at)
        if y is not None:
            if ys is None:
                if i > 0:
                    raise QdqError(f"{at}: has labels, earlier batches had none")
                ys = _Column(folder / "y.raw", "labels")
                opened.append(ys)
            ys.add(y, at)
        elif ys is not None:
            raise QdqError(f"{at}: has no labels, earlier batches had them")
    return ys


def spill_folder() -> str:
    """A fresh temporary folder for spilled batches (under $TMPDIR)."""
    return tempfile.mkdtemp(prefix="qdq-onnx-batches-")
