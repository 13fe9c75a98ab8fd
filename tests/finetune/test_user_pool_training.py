"""Fine-tuning on the conformance pool of what users bring (tests/user_pool.py): every model
trains a few steps with labels and by self-distillation, and the emitted file lints clean
with the TensorRT rules."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras_hub")
pytest.importorskip("tf_keras")

from user_pool import POOL, keras_outputs  # noqa: E402

from qdq_onnx import pipeline, quantize_model  # noqa: E402
from qdq_onnx.errors import QdqError  # noqa: E402

pytestmark = pytest.mark.training
STEPS = 3
# Refused with a message (docs/troubleshooting.md: Limits): tf2onnx writes Keras 3's GRU
# as a Loop, and onnxruntime-training 1.19 aborts the process building a gradient for
# control flow.
UNTRAINABLE = {"gru_text": r"a model with Loop \(tf2onnx 1.17 writes a Keras 3 GRU as a Loop"}


@pytest.fixture(scope="module")
def quantized():
    cache = {}

    def get(entry):
        if entry.name not in cache:
            model = entry.build()
            x = entry.inputs(16)
            cache[entry.name] = (model, x, quantize_model(model, calibration_data=x))
        return cache[entry.name]

    return get


def _targets(model, x):
    """Regression targets shaped like each output (labels any model can take)."""
    rng = np.random.default_rng(5)
    return [rng.normal(size=o.shape).astype(np.float32) for o in keras_outputs(model, x)]


@pytest.mark.parametrize("entry", POOL, ids=[p.name for p in POOL])
@pytest.mark.parametrize("how", ["labels", "distill"])
def test_fine_tunes_and_emits_a_clean_file(quantized, entry, how):
    model, x, q = quantized(entry)
    engine = {}
    if entry.name in UNTRAINABLE:
        with pytest.raises(QdqError, match=UNTRAINABLE[entry.name]):
            q.compile(loss="mse", distill=how == "distill", backend="onnxruntime")
        engine = {"backend": "torch"}  # it differentiates Loop (docs/finetuning.md)
    targets = _targets(model, x)
    if how == "labels":
        q.compile(loss="mse", learning_rate=1e-3, **engine)
        y = targets[0] if len(targets) == 1 else targets
        history = q.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=STEPS, verbose=0)
    else:
        q.compile(distill=True, learning_rate=1e-3, **engine)
        history = q.fit(x, batch_size=4, epochs=1, steps_per_epoch=STEPS, verbose=0)
    assert history.steps == STEPS and np.isfinite(history.history["loss"]).all()
    emitted = q.export()  # refused unless it computes what the training graph computes
    assert pipeline.lint(emitted).findings == []
    q._close()
