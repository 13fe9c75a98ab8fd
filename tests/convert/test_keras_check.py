"""The check of a conversion against Keras (convert/keras_check.py), without TensorFlow."""

import types
from collections import OrderedDict

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.convert.keras_check import conversion_problem, without_optimizers


def _scale(factor, shape_target=None):
    nodes = [helper.make_node("Mul", ["x", "k"], ["y" if shape_target is None else "m"],
                              name="scale")]
    inits = [numpy_helper.from_array(np.array(factor, np.float32), "k")]
    if shape_target is not None:
        nodes.append(helper.make_node("Reshape", ["m", "shape"], ["y"], name="captured"))
        inits.append(numpy_helper.from_array(np.array(shape_target, np.int64), "shape"))
    g = helper.make_graph(nodes, "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_a_matching_conversion_passes_and_a_wrong_one_names_the_output():
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    assert conversion_problem(_scale(2.0), [x], [2 * x]) is None
    problem = conversion_problem(_scale(2.0), [x], [3 * x])
    assert "output 'y' differs from Keras by up to" in problem
    assert "has shape (2, 4), Keras gives (4, 2)" in conversion_problem(_scale(1.0), [x], [x.T])


def test_a_graph_that_cannot_run_names_the_node():
    x = np.ones((2, 4), np.float32)
    problem = conversion_problem(_scale(1.0, shape_target=[3, 4]), [x], [x])
    assert problem.startswith("onnxruntime cannot run node 'captured' (Reshape)")


def test_optimizers_are_switched_off_only_inside_the_block():
    table = OrderedDict([("a", 1), ("reshape_optimizer", 2), ("b", 3)])
    fake = types.SimpleNamespace(optimizer=types.SimpleNamespace(_optimizers=table))
    with without_optimizers(fake, ("reshape_optimizer",)):
        assert list(fake.optimizer._optimizers) == ["a", "b"]
    assert fake.optimizer._optimizers is table
