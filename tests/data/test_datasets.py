"""The bundled-data loader unpickles numpy arrays only."""

import gzip
import os
import pickle

import numpy as np
import pytest

from qdq_onnx.data.datasets import load_numpy_pickle


def test_numpy_arrays_load(tmp_path):
    p = tmp_path / "ok.pkl.gz"
    with gzip.open(p, "wb") as fh:
        pickle.dump(((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),), fh)
    ((x, y),) = load_numpy_pickle(p)
    assert x.shape == (2, 3) and y.tolist() == [1, 2]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_in_a_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        load_numpy_pickle(p)
