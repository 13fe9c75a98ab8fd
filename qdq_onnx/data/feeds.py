"""Loading user data for calibration and training: .npz/.npy files or folders of .npy, and
in-memory arrays. Never unpickles (allow_pickle=False). Names, shapes and dtypes are validated
against the model's inputs before any work starts; `.npy` files are memory-mapped and their
values (NaN/Inf) are checked batch by batch as they are read."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qdq_onnx.data.images import ImageArray, ImageFolder, is_image_folder
from qdq_onnx.data.iterables import POSITION, as_named, is_positional, split_batch
from qdq_onnx.errors import QdqError

LABEL_KEYS = ("labels", "y")


def given_by_position(x: Any, model: onnx.ModelProto) -> bool:
    """Whether `x` is a multi-input model's inputs as a list/tuple in input order (Keras's
    `[images, meta]`), not a list of batches."""
    return is_positional(x) and len(model_inputs(model)) > 1


def _by_position(arrays: dict[str, Any], names: list[str], source: str) -> dict[str, Any]:
    keys = [POSITION.format(i) for i in range(len(arrays))]
    if not arrays or set(arrays) != set(keys):
        return arrays
    if len(keys) != len(names):
        raise QdqError(f"{source}: {len(keys)} arrays given by position, but the model has "
                       f"{len(names)} input(s) {names} (give them in this order, or as a "
                       "dict by name)")
    return {n: np.asarray(arrays[k]) if not hasattr(arrays[k], "ndim") else arrays[k]
            for n, k in zip(names, keys)}


def numpy_dtype(elem_type: int) -> type:
    """The numpy type of an ONNX element type (float32 for types numpy lacks)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).type
    except (KeyError, TypeError, ValueError):
        return np.float32


def model_inputs(model: onnx.ModelProto) -> dict[str, tuple[tuple[int | None, ...], Any]]:
    """Graph inputs (not initializers): name -> (shape with None for symbolic dims, dtype)."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        # Some exporters (paddle2onnx) write an unknown size as -1, not as a symbol.
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                     for d in tt.shape.dim)
        out[vi.name] = (dims, numpy_dtype(tt.elem_type))
    return out


def _load_file(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    with open(path, "rb") as fh:
        magic = fh.read(6)
    if path.suffix == ".npz" and not zipfile.is_zipfile(path):
        raise QdqError(f"{path}: not a readable numpy file (an .npz is a zip archive of "
                       ".npy arrays, as numpy.savez writes it)")
    if path.suffix == ".npy" and magic != b"\x93NUMPY":
        raise QdqError(f"{path}: not a readable numpy file (no .npy header)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if path.suffix == ".npy":  # memory-mapped: its size is bounded by disk, not RAM
            return {"": np.load(path, mmap_mode="r", allow_pickle=False)}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise QdqError(f"{path}: holds pickled Python objects; qdq-onnx reads plain numpy "
                           "arrays only (save with numpy.savez, not pickle)") from exc
        raise QdqError(f"{path}: not a readable numpy file ({exc})") from exc
    except OSError as exc:
        raise QdqError(f"{path}: not a readable numpy file ({exc})") from exc
    raise QdqError(f"{path}: expected a .npz or .npy file, or a folder of .npy files "
                   "or .npz shards")


def load_arrays(source: str | Path | ImageFolder) -> dict[str, np.ndarray]:
    """The arrays of a data file or folder by name (memory-mapped or decoded on access
    where possible); an image folder gives its images and its class labels."""
    if isinstance(source, ImageFolder):
        return source.arrays()
    p = Path(source)
    if not p.exists():
        raise QdqError(f"{p}: no such data file or folder")
    if is_image_folder(p):
        return ImageFolder(p).arrays()
    if p.is_dir():
        files, shards = sorted(p.glob("*.npy")), sorted(p.glob("*.npz"))
        if files and shards:
            raise QdqError(f"{p}: the folder mixes .npy and .npz files; use one .npy per "
                           "input (plus labels.npy) or .npz shards, not both")
        if shards:
            return _load_shards(p, shards)
        if not files:
            raise QdqError(f"{p}: the folder holds no .npy files, .npz shards or class "
                           "sub-folders of images")
        return {f.stem: _load_file(f)[""] for f in files}
    return _load_file(p)


def _load_shards(folder: Path, shards: list[Path]) -> dict[str, np.ndarray]:
    """A folder of `.npz` shards with the same array names, read one shard at a time into
    memory-mapped temporary files (a zip member cannot be memory-mapped), removed at exit."""
    import atexit
    import shutil

    from qdq_onnx.data.iterables import spill, spill_folder

    tmp = spill_folder()
    atexit.register(shutil.rmtree, tmp, True)
    arrays, _ = spill((_load_file(f) for f in shards), tmp,
                      f"{folder} (.npz shards in name order)", need_labels=False)
    return arrays


def match_inputs(arrays: dict[str, np.ndarray], model: onnx.ModelProto, source: str = "data",
                 allow_extra: tuple[str, ...] = LABEL_KEYS) -> dict[str, np.ndarray]:
    """Map arrays to model inputs by name (one unnamed array for a single-input model) and
    check shapes, dtypes and values. Raises QdqError naming the mismatch."""
    inputs = model_inputs(model)
    names = list(inputs)
    feeds: dict[str, np.ndarray] = {}
    arrays = _by_position(arrays, names, source)
    data_keys = [k for k in arrays if k not in allow_extra]
    if len(names) == 1 and len(data_keys) == 1:
        feeds[names[0]] = arrays[data_keys[0]]
    else:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise QdqError(f"{source}: no array for model input(s) {missing}; found "
                           f"{sorted(arrays)} (name arrays after the model inputs {names})")
        feeds = {n: arrays[n] for n in names}
    count = None
    for name, arr in feeds.items():
        dims, dtype = inputs[name]
        if isinstance(arr, ImageArray):
            feeds[name] = arr = arr.bind(dims, name)
        if arr.ndim != len(dims):
            raise QdqError(f"{source}: input {name!r} has shape {list(arr.shape)} but the "
                           f"model expects rank {len(dims)} {_fmt(dims)}")
        for i, (got, want) in enumerate(zip(arr.shape, dims)):
            if i > 0 and want is not None and got != want:
                raise QdqError(f"{source}: input {name!r} has shape {list(arr.shape)} but the "
                               f"model expects {_fmt(dims)} (dimension {i}: {got} != {want}; "
                               "check NHWC vs NCHW)")
        if isinstance(arr, (np.memmap, Streamed, ImageArray)):
            if arr.shape[0] == 0:
                raise QdqError(f"{source}: input {name!r} is empty (0 samples)")
            if not np.issubdtype(arr.dtype, np.number):
                raise QdqError(f"{source}: input {name!r} has dtype {arr.dtype}, the model "
                               f"expects {np.dtype(dtype)}")
            if isinstance(arr, np.memmap):
                feeds[name] = arr = Streamed(arr, dtype, f"{source}: input {name!r}")
            if count is not None and arr.shape[0] != count:
                raise QdqError(f"{source}: inputs have different sample counts "
                               f"({count} vs {arr.shape[0]} for {name!r})")
            count = arr.shape[0]
            continue
        if arr.dtype != dtype:
            if np.issubdtype(arr.dtype, np.number) and np.issubdtype(dtype, np.floating):
                arr = arr.astype(dtype)
                feeds[name] = arr
            else:
                raise QdqError(f"{source}: input {name!r} has dtype {arr.dtype}, the model "
                               f"expects {np.dtype(dtype)}")
        if arr.shape[0] == 0:
            raise QdqError(f"{source}: input {name!r} is empty (0 samples)")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise QdqError(f"{source}: input {name!r} holds {bad} NaN/Inf value(s)")
        if count is not None and arr.shape[0] != count:
            raise QdqError(f"{source}: inputs have different sample counts "
                           f"({count} vs {arr.shape[0]} for {name!r})")
        count = arr.shape[0]
    return feeds


class Streamed:
    """A memory-mapped input read batch by batch: each batch is cast to the model's dtype
    and checked for NaN/Inf when it is read, so the whole file is never loaded (a check of
    the whole array would bring every page of it into memory).

    Rows of a C-ordered `.npy` are read with `os.pread`, not through the mapping: shuffled
    batches touch scattered rows, and on a mapping the kernel can map a whole read-ahead
    window per fault (a 50-step run over a 2 GB folder reached 1.2 GB resident, measured);
    read from the file, only the batch is held."""

    def __init__(self, array: np.ndarray, dtype: Any, what: str) -> None:
        self.array, self.dtype, self.what = array, np.dtype(dtype), what
        self.shape, self.ndim = array.shape, array.ndim
        self._file = None
        name = getattr(array, "filename", None)
        if isinstance(array, np.memmap) and name and array.flags.c_contiguous \
                and getattr(array, "base", None) is not None:
            self._row = int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize
            self._offset = int(array.offset)
            self._file = Path(name)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), self.array.dtype)
        view = out.reshape(len(rows), -1).view(np.uint8)
        fd = os.open(self._file, os.O_RDONLY)
        try:
            for k, r in enumerate(rows):
                data = os.pread(fd, self._row, self._offset + int(r) * self._row)
                view[k] = np.frombuffer(data, np.uint8)
        finally:
            os.close(fd)
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._file is not None:
            rows = np.arange(self.shape[0])[index]
            block = self._rows(np.atleast_1d(rows))
            if np.ndim(rows) == 0:
                block = block[0]
        else:
            block = np.asarray(self.array[index])
        block = block.astype(self.dtype, copy=False)
        if np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise QdqError(f"{self.what} holds {bad} NaN/Inf value(s) in the samples read")
        return block


def _fmt(dims: tuple) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def batches(feeds: dict[str, np.ndarray], batch_size: int, limit: int | None = None
            ) -> Iterator[dict[str, np.ndarray]]:
    n = next(iter(feeds.values())).shape[0]
    if limit is not None:
        n = min(n, limit)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield {k: v[start:stop] for k, v in feeds.items()}


def as_batches(data: Any, model: onnx.ModelProto, batch_size: int = 32,
               limit: int | None = None, source: str = "data", any_batch: bool = False
               ) -> tuple[Iterable[dict[str, np.ndarray]], int | None]:
    """Accept a path, a dict of arrays, one array, or an iterable of batches (x, (x, y)
    or (x, y, w); x an array, tensor or dict of them: `tf.data`, PyDataset, generators).
    Returns (batch iterable, sample count if known). A model with a fixed batch
    size gets batches of exactly that size unless `any_batch` (the caller runs a copy with
    the batch dimension relaxed)."""
    if isinstance(data, (str, Path, ImageFolder)):
        where = str(data.path if isinstance(data, ImageFolder) else data)
        feeds = match_inputs(load_arrays(data), model, source=where)
    elif isinstance(data, np.ndarray):
        feeds = match_inputs({"": data}, model, source=source)
    elif isinstance(data, dict) or given_by_position(data, model):
        feeds = match_inputs(as_named(data), model, source=source)
    else:
        names = list(model_inputs(model))

        def gen() -> Iterator[dict[str, np.ndarray]]:
            seen = 0
            for i, item in enumerate(data):
                x, _ = split_batch(item, f"{source} batch {i}")  # labels are not needed
                feed = match_inputs(as_named(x), model, source=f"{source} batch {i}")
                if set(feed) != set(names):
                    raise QdqError(f"{source} batch {i}: inputs {sorted(feed)} != {names}")
                yield feed
                seen += next(iter(feed.values())).shape[0]
                if limit is not None and seen >= limit:
                    return

        return gen(), None
    n = next(iter(feeds.values())).shape[0]
    total = n if limit is None else min(n, limit)
    fixed = {dims[0] for dims, _ in model_inputs(model).values() if dims and dims[0]}
    if fixed and not any_batch:  # a fixed-batch model takes exactly that many per run
        batch_size = min(fixed)
    return batches(feeds, batch_size, limit), total


def split_labels(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
    """(the arrays without the labels, the labels stored under 'labels' or 'y', or None).
    A model with several outputs has its labels under 'labels/<output name>': they come
    back as a dict by output name."""
    per_output = {k.split("/", 1)[1]: k for k in arrays
                  if k.split("/", 1)[0] in LABEL_KEYS and "/" in k}
    if per_output:
        rest = dict(arrays)
        return rest, {name: rest.pop(key) for name, key in per_output.items()}
    key = next((k for k in LABEL_KEYS if k in arrays), None)
    if key is None:
        return arrays, None
    rest = dict(arrays)
    return rest, rest.pop(key)


def load_labelled(path: str | Path, model: onnx.ModelProto, need_labels: bool = True
                  ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Model inputs (matched and checked) and labels from a data file or folder."""
    arrays, labels = split_labels(load_arrays(path))
    if labels is None and need_labels:
        raise QdqError(f"{path}: no labels: store them under the key 'labels' (or 'y'; "
                       f"'labels/<output>' for each output of a model with several), or "
                       f"fine-tune by distillation (--distill); found {sorted(arrays)}")
    return match_inputs(arrays, model, source=str(path)), labels
