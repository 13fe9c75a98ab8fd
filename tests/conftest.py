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
    """The digits MLP trained in float (40 epochs), shared by the fine-tuning and
    sensitivity tests."""
    from helpers import mlp

    from qdq_onnx.finetune import FitConfig, TrainConfig, Trainer

    xtr, ytr, _, _ = digits
    trainer = Trainer(mlp(), TrainConfig(learning_rate=3e-3, weight_decay=0.0))
    trainer.fit(xtr, ytr, FitConfig(epochs=40, verbose=0))
    model = trainer.emit()
    trainer.close()
    return model
