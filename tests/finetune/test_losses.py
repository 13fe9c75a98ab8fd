"""Losses: Keras names, labels checked against the model output, probabilities turned
into the logits the loss blocks take, accuracy per kind."""

import numpy as np
import pytest
from helpers import mlp

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.losses import LossSpec


def test_names_map_to_kinds():
    assert LossSpec("sparse_categorical_crossentropy").kind == "ce"
    assert LossSpec("categorical_crossentropy").kind == "ce"
    assert LossSpec("binary_crossentropy").kind == "bce"
    assert LossSpec("mean_squared_error").kind == LossSpec("mse").kind == "mse"
    with pytest.raises(QdqError, match="unknown loss 'hinge'"):
        LossSpec("hinge").kind  # noqa: B018


def test_sparse_labels_are_checked_against_the_classes():
    spec = LossSpec("sparse_categorical_crossentropy")
    assert spec.labels(np.array([[1], [2]]), (-1, 10)).tolist() == [1, 2]
    with pytest.raises(QdqError, match=r"class indices span 0\.\.12 but the model has 10"):
        spec.labels(np.array([0, 12]), (-1, 10))
    with pytest.raises(QdqError, match="shape \\[N\\]"):
        spec.labels(np.zeros((2, 3)), (-1, 10))
    with pytest.raises(QdqError, match="NaN/Inf"):
        spec.labels(np.array([0.0, np.nan]), (-1, 10))
    with pytest.raises(QdqError, match="numeric"):
        spec.labels(np.array(["a", "b"]), (-1, 10))


def test_one_hot_labels_become_indices_and_soft_ones_are_refused():
    spec = LossSpec("categorical_crossentropy")
    assert spec.labels(np.eye(3)[[2, 0]], (-1, 3)).tolist() == [2, 0]
    with pytest.raises(QdqError, match="soft"):
        spec.labels(np.full((2, 3), 1 / 3), (-1, 3))
    with pytest.raises(QdqError, match="one-hot \\[N, 3\\]"):
        spec.labels(np.eye(4)[[0]], (-1, 3))


def test_regression_labels_take_the_output_shape():
    spec = LossSpec("mse")
    assert spec.labels(np.arange(3.0), (-1, 1)).shape == (3, 1)
    with pytest.raises(QdqError, match="output is \\[N, 2\\]"):
        spec.labels(np.zeros((3, 3)), (-1, 2))


def test_accuracy_per_kind():
    out = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert LossSpec("sparse_categorical_crossentropy").correct(out, np.array([1, 0, 0])) == \
        (2, 3)
    logits = np.array([[-2.0], [1.0], [0.5]])
    assert LossSpec("binary_crossentropy").correct(logits, np.array([[0.0], [1.0], [0.0]])) \
        == (2, 3)
    probs = np.array([[0.2], [0.7], [0.6]])
    assert LossSpec("binary_crossentropy", from_logits=False).correct(
        probs, np.array([[0.0], [1.0], [0.0]])) == (2, 3)
    assert LossSpec("mse").correct(out, out) is None


def test_probabilities_become_log_probabilities_for_cross_entropy():
    model = mlp(widths=(4,), softmax=True)
    loss_input = LossSpec("sparse_categorical_crossentropy", from_logits=False) \
        .add_loss_input(model, "out")
    assert loss_input != "out"
    ops = [n.op_type for n in model.graph.node[-2:]]
    assert ops == ["Clip", "Log"]
    assert LossSpec("mse", from_logits=False).add_loss_input(mlp(), "out") == "out"
