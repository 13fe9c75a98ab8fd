import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as (x_train, y_train, x_test, y_test), shuffled once."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def float_model(digits):
    """The digits MLP (3 hidden ReLU layers of 16) trained in float by scikit-learn, so the
    tests that need a trained model run where onnxruntime-training is not installed."""
    import warnings

    from helpers import mlp
    from onnx import numpy_helper
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, _, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "maximum iterations reached": meant
        clf = MLPClassifier((16, 16, 16), learning_rate_init=3e-3, max_iter=300,
                            random_state=1, tol=0, n_iter_no_change=1000).fit(xtr, ytr)
    values = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        values[f"w{i}"], values[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
    model = mlp()
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(values[t.name], t.name))
    return model


@pytest.fixture(autouse=True)
def _seeded_builders():
    """Every test builds its models from freshly seeded generators (tests/helpers.py), so
    the weights a test sees do not depend on which tests ran before it."""
    import helpers

    helpers.RNG = np.random.default_rng(1234)
    helpers.LN_RNG = np.random.default_rng(5)
    yield


@pytest.fixture
def rng():
    """A seeded generator for a test's own data."""
    return np.random.default_rng(0)
