"""The training-graph rewrites of the ops onnxruntime-training cannot differentiate that
real pretrained models use (issue 26): Resize/Upsample, Pad in reflect/edge/wrap mode,
HardSigmoid, HardSwish, PRelu, ReduceMax/ReduceMin/GlobalMaxPool. Each computes what the
original op computes in onnxruntime, over its attribute space: bit for bit where it only
moves data, within float32 rounding where it sums in another order."""

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.lowering_pass import Lowering
from qdq_onnx.graph.sessions import inference_session

TOLERANCE = 1e-5  # relative to the output's magnitude


def _model(node, x_shape, opset, inits=(), constants=()):
    g = helper.make_graph([*constants, node], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [onnx.ValueInfoProto(name="y")], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _lowered(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = out.graph.node[-1]
    rewrite = Lowering(out, [node])
    nodes = [*out.graph.node[:-1], *rewrite.nodes(node, [node])]
    assert node.name in rewrite.originals, "the op was not rewritten"
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _compare(model, x, exact=False):
    lowered = _lowered(model)
    assert model.graph.node[-1].op_type not in {n.op_type for n in lowered.graph.node}
    want = inference_session(model, optimize=False).run(None, {"x": x})[0]
    got = inference_session(lowered, optimize=False).run(None, {"x": x})[0]
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        assert np.abs(got - want).max() <= TOLERANCE * max(1.0, float(np.abs(want).max()))


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _f(name, values):
    return numpy_helper.from_array(np.asarray(values, np.float32), name)


def _i(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


# -- Resize ------------------------------------------------------------------------------
TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
              "half_pixel_symmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [[1, 1, 2, 2], [1, 1, 1.5, 3], [1, 1, 0.5, 0.75], [1, 1, 2.5, 1]]
CASES = ([("nearest", t, n, s) for t, n, s in itertools.product(TRANSFORMS, NEAREST, SCALES[:2])]
         + [("nearest", t, "round_prefer_floor", s) for t in TRANSFORMS for s in SCALES[2:]]
         + [("linear", t, None, s) for t, s in itertools.product(TRANSFORMS, SCALES)]
         + [("cubic", t, None, s) for t, s in itertools.product(TRANSFORMS[:4], SCALES[:3])])


@pytest.mark.parametrize("mode,transform,nearest,scales", CASES,
                         ids=[f"{m}-{t}-{n}-{i % 4}" for i, (m, t, n, _) in enumerate(CASES)])
def test_resize_as_gathers_matches_the_op(mode, transform, nearest, scales):
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if nearest:
        attrs["nearest_mode"] = nearest
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", **attrs)
    shape = [2, 3, 6, 5]
    _compare(_model(node, shape, 19, [_f("scales", scales)]), _x(shape),
             exact=mode == "nearest")


@pytest.mark.parametrize("exclude,a", [(0, -0.5), (1, -0.75)])
def test_resize_cubic_coefficients_and_exclude_outside(exclude, a):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="cubic",
                            cubic_coeff_a=a, exclude_outside=exclude)
    _compare(_model(node, [1, 2, 5, 7], 13, [_f("scales", [1, 1, 1.6, 0.5])]),
             _x([1, 2, 5, 7]))


def test_resize_to_sizes_with_axes_and_computed_sizes():
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="resize",
                            mode="linear", axes=[3, 2])
    _compare(_model(node, [1, 2, 5, 4], 18, [_i("sizes", [7, 9])]), _x([1, 2, 5, 4]))
    # a size computed at run time (Shape -> Mul, as torch.onnx writes an upsampling)
    consts = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
              helper.make_node("Mul", ["shape", "two"], ["sizes"], name="double")]
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="resize",
                            mode="nearest")
    model = _model(node, [1, 2, 3, 4], 13, [_i("two", [1, 1, 2, 2])], consts)
    _compare(model, _x([1, 2, 3, 4]), exact=True)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_and_opset_10_resize(mode):
    up = helper.make_node("Upsample", ["x", "scales"], ["y"], name="up", mode=mode)
    _compare(_model(up, [1, 2, 3, 4], 9, [_f("scales", [1, 1, 2, 3])]), _x([1, 2, 3, 4]),
             exact=mode == "nearest")
    old = helper.make_node("Resize", ["x", "scales"], ["y"], name="resize", mode=mode)
    _compare(_model(old, [1, 2, 3, 4], 10, [_f("scales", [1, 1, 2, 1.5])]),
             _x([1, 2, 3, 4]), exact=mode == "nearest")


def test_what_the_resize_rewrite_cannot_take_is_refused_by_name():
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="crop",
                            coordinate_transformation_mode="tf_crop_and_resize")
    model = _model(node, [1, 1, 4, 4], 13, [_f("roi", [0, 0, 0, 0, 1, 1, 1, 1]),
                                            _f("scales", [1, 1, 2, 2])])
    with pytest.raises(QdqError, match="crop: a Resize with coordinate_transformation_mode="
                                       "'tf_crop_and_resize' cannot be fine-tuned"):
        _lowered(model)


# -- Pad ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 2, 1], [0, 0, 0, 3, 0, 0, 0, 0],
                                  [0, 1, 1, 0, 0, 0, -1, 2]])
def test_pad_as_gathers_is_bit_exact(mode, pads):
    if mode == "reflect" and pads[1]:
        pads = [0, 0, *pads[2:4], 0, 0, *pads[6:]]  # reflect pads of at most size - 1
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode=mode)
    _compare(_model(node, [2, 3, 4, 5], 19, [_i("pads", pads)]), _x([2, 3, 4, 5]), exact=True)


def test_pad_with_axes_and_the_old_attribute():
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad", mode="edge")
    _compare(_model(node, [2, 3, 4, 5], 18, [_i("pads", [1, 2, 0, 3]), _i("axes", [3, 2])]),
             _x([2, 3, 4, 5]), exact=True)
    old = helper.make_node("Pad", ["x"], ["y"], name="pad", mode="reflect",
                           pads=[0, 0, 1, 1, 0, 0, 1, 1])
    _compare(_model(old, [1, 2, 4, 4], 10), _x([1, 2, 4, 4]), exact=True)


def test_a_constant_pad_keeps_its_own_gradient():
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="constant")
    model = _model(node, [1, 1, 2, 2], 13, [_i("pads", [0, 0, 1, 1, 0, 0, 1, 1])])
    rewrite = Lowering(model, [model.graph.node[0]])
    assert rewrite.nodes(model.graph.node[0], ["same"]) == ["same"]


# -- activations -------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [("HardSigmoid", {}),
                                      ("HardSigmoid", {"alpha": 0.1666667, "beta": 0.5}),
                                      ("HardSigmoid", {"alpha": 0.5, "beta": 0.2}),
                                      ("HardSwish", {})])
def test_hard_activations_as_mul_add_clip(op, attrs):
    node = helper.make_node(op, ["x"], ["y"], name="act", **attrs)
    x = np.concatenate([_x([2, 3, 8, 8]) * 4, np.array([-3, 3, 0, -2.5, 2.5, 6, -6],
                                                       np.float32).reshape(1, 1, 1, 7)
                        .repeat(2, 0).repeat(3, 1).repeat(8, 2)], axis=3)
    _compare(_model(node, list(x.shape), 14), x)


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1)])
def test_prelu_is_bit_exact(slope_shape):
    slope = np.random.default_rng(1).uniform(0.05, 0.4, slope_shape).astype(np.float32)
    node = helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")
    _compare(_model(node, [2, 3, 4, 4], 13, [_f("slope", slope)]), _x([2, 3, 4, 4]),
             exact=True)


# -- extreme reductions ------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes,keepdims", [([2, 3], 1), ([1], 0), ([-1], 1), ([1, 3], 0)])
def test_extreme_reductions_as_arg_and_gather_are_bit_exact(op, axes, keepdims):
    node = helper.make_node(op, ["x"], ["y"], name="reduce", axes=axes, keepdims=keepdims)
    _compare(_model(node, [2, 3, 4, 5], 13), _x([2, 3, 4, 5]), exact=True)
    new = helper.make_node(op, ["x", "axes"], ["y"], name="reduce", keepdims=keepdims)
    _compare(_model(new, [2, 3, 4, 5], 18, [_i("axes", axes)]), _x([2, 3, 4, 5]), exact=True)


def test_global_max_pool_is_bit_exact():
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"], name="gmp")
    _compare(_model(node, [2, 3, 4, 5], 13), _x([2, 3, 4, 5]), exact=True)
    _compare(_model(node, [2, 3, 7], 13), _x([2, 3, 7]), exact=True)


def test_a_reduction_over_the_batch_is_left_as_it_is():
    node = helper.make_node("ReduceMax", ["x"], ["y"], name="reduce", axes=[0, 1])
    model = _model(node, [2, 3, 4], 13)
    assert Lowering(model, [node]).nodes(node, ["same"]) == ["same"]


# -- Split with an output nothing reads --------------------------------------------------
@pytest.mark.parametrize("opset,split", [(13, [1, 3, 2]), (11, [2, 2, 2]), (18, None)])
def test_a_split_with_an_unread_output_becomes_slices(opset, split):
    inputs, attrs, inits = ["x"], {"axis": 2}, []
    if split and opset >= 13:
        inputs.append("split")
        inits.append(_i("split", split))
    elif split:
        attrs["split"] = split
    if opset >= 18:
        attrs["num_outputs"] = 3
    node = helper.make_node("Split", inputs, ["a", "unread", "y"], name="split", **attrs)
    _compare(_model(node, [2, 3, 6, 4], opset, inits), _x([2, 3, 6, 4]), exact=True)


def test_a_split_whose_outputs_are_all_read_keeps_its_gradient():
    node = helper.make_node("Split", ["x"], ["y"], name="split", axis=1)
    model = _model(node, [2, 3, 4], 13)
    assert Lowering(model, [node]).nodes(node, ["same"]) == ["same"]
