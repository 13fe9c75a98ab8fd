"""keras.applications models (weights=None) converted by qdq-onnx: TensorRT placement checked
on graph structure, and parity with the original toolkit's golden expectations."""

import pytest

pytest.importorskip("tensorflow")

from keras_pool import layer_placement  # noqa: E402

from qdq_onnx import quantize_model  # noqa: E402
from qdq_onnx.convert.keras_model import keras_to_onnx  # noqa: E402
from qdq_onnx.graph.index import GraphIndex, attribute  # noqa: E402
from qdq_onnx.graph.layers import LayerGraph  # noqa: E402

pytestmark = pytest.mark.slow
APPS = ["ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0", "InceptionV3"]
_cache: dict = {}


def converted(name):
    if name not in _cache:
        import keras

        keras.utils.clear_session()  # auto names (max_pooling2d_1, ...) restart, whatever ran
        _cache[name] = keras_to_onnx(getattr(keras.applications, name)(weights=None))
    return _cache[name]


def _dq_fed(index):
    out = {}
    for node in index.nodes:
        for i, t in enumerate(node.input):
            p = index.producer.get(t)
            if p is not None and p.op_type == "DequantizeLinear":
                out[(node.name, i)] = p
    return out


_FUSIBLE = {"BatchNormalization", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
            "LeakyRelu", "Identity", "Dropout", "Mul", "Add"}


def _fused_branch(findex, tensor):
    """Independent structural check: the weighted node this Add input fuses with, if any."""
    t = tensor
    for _ in range(9):
        if findex.consumer_count(t) != 1:
            return None
        node = findex.producer.get(t)
        if node is None:
            return None
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") \
                and findex.is_constant(node.input[1]):
            return node
        live = findex.live_inputs(node)
        if node.op_type not in _FUSIBLE or len(live) != 1:
            return None
        t = node.input[live[0]]
    return None


@pytest.mark.parametrize("name", APPS)
def test_tensorrt_placement_on_applications(name, record_property):
    model = converted(name)
    # Values a layer captured (EfficientNet's Normalization) are initializers, not inputs.
    assert GraphIndex(model.graph).graph_inputs == ["input"]
    q = quantize_model(model)
    findex = GraphIndex(q.float_model.graph)
    qindex = GraphIndex(q.onnx.graph)
    fed = _dq_fed(qindex)
    weighted = 0
    for node in findex.nodes:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or not findex.is_constant(
                node.input[1]):
            continue
        weighted += 1
        assert (node.name, 0) in fed, f"{node.name}: data input not quantized"
        dq = fed.get((node.name, 1))
        assert dq is not None, f"{node.name}: weight not quantized"
        w_shape = findex.constant_shape(node.input[1])
        axis = attribute(dq, "axis")
        expect = 0 if node.op_type == "Conv" else len(w_shape) - 1
        assert axis == expect
        assert qindex.constant_shape(dq.input[1]) == (w_shape[expect],)
    residual = 0
    for node in findex.nodes:
        live = findex.live_inputs(node)
        if node.op_type != "Add" or len(live) != 2 or len(node.input) != 2:
            continue
        branches = [_fused_branch(findex, node.input[i]) for i in live]
        if not any(branches):
            continue
        residual += 1
        quantized = [(node.name, i) in fed for i in live]
        assert quantized.count(False) == 1, f"{node.name}: exactly one input must stay float"
        kept = quantized.index(False)
        assert branches[kept] is not None, f"{node.name}: the float input is not a conv branch"
        # Nothing quantized between that weighted op and the Add.
        t = node.input[live[kept]]
        while findex.producer.get(t) is not branches[kept]:
            producer = findex.producer[t]
            assert not any((producer.name, i) in fed for i in range(len(producer.input)))
            t = producer.input[findex.live_inputs(producer)[0]]
    from qdq_onnx.diagnostics.lint import lint_model
    from qdq_onnx.placement.rules import load_rules

    report = lint_model(q.export(), load_rules("tensorrt"))
    assert report.findings == [], [f.message for f in report.findings[:5]]
    assert all(r.quantized for r in report.layers)
    counts = q.plan.counts()
    record_property("counts", {"weighted": weighted, "residual_adds": residual, **counts})
    print(f"\n{name}: {weighted} weighted ops, {residual} residual adds, {counts}")
    assert weighted > 0
    if name in ("ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0"):
        assert residual > 0


RESNET_STAGES = [(2, 3), (3, 4), (4, 6), (5, 3)]


def test_resnet50_matches_original_toolkit_golden():
    q = quantize_model(converted("ResNet50"), rules="nvidia-tf-toolkit",
                       custom_qdq_cases=["ResNetV1QDQCase"])
    got = layer_placement(q.float_model, q.onnx)
    adds = {k: v for k, v in got.items() if k.endswith("_add")}
    assert len(adds) == 16
    for name, quant in adds.items():
        # Projection blocks: both inputs are Conv-BN branches; the original leaves the first
        # (the shortcut) float and quantizes input 1 (measured by running the original).
        assert quant == ({1} if "_block1_" in name else {0}), name
    others = {k: v for k, v in got.items() if v and not k.endswith("_add")}
    classes = {la.name: la.class_name for la in LayerGraph(q.float_model).layers}
    for name, quant in others.items():
        assert classes[name] in ("Conv2D", "Dense", "GlobalAveragePooling2D"), name
        assert quant == ({0} if classes[name] == "GlobalAveragePooling2D"
                         else {"input", "weight"}), name


def test_resnet50v2_matches_original_toolkit_golden():
    q = quantize_model(converted("ResNet50V2"), rules="nvidia-tf-toolkit",
                       custom_qdq_cases=["ResNetV2QDQCase"])
    got = layer_placement(q.float_model, q.onnx)
    classes = {la.name: la.class_name for la in LayerGraph(q.float_model).layers}
    golden_adds = {f"conv{s}_block{b}_out": {1 if b == 1 else 0} for s, n in RESNET_STAGES
                   for b in range(1, n + 1)}  # block 1: projection, input 1 (as the original)
    golden_bn = {f"conv{s}_block{b}_preact_bn" for s, n in RESNET_STAGES
                 for b in range(1, n + 1)} | {"post_bn"}
    golden_mp = {"pool1_pool", "max_pooling2d", "max_pooling2d_1", "max_pooling2d_2"}
    for name, quant in got.items():
        cls = classes[name]
        if name in golden_adds:
            assert quant == golden_adds[name], name
        elif name in golden_bn or name in golden_mp:
            assert quant == {0}, name
        elif cls in ("Conv2D", "Dense"):
            assert quant == {"input", "weight"}, name
        elif cls == "GlobalAveragePooling2D":
            assert quant == {0}, name
        else:
            assert not quant, f"{name} ({cls}) should not be quantized: {quant}"
    assert {n for n in golden_bn | golden_mp if not got.get(n)} == set()


def test_efficientnet_case_matches_the_original_on_block_adds():
    """EfficientNet blocks end Conv-BN-Dropout, a chain the original's residual case does
    not match, so with EfficientNetQDQCase it quantizes both inputs of the block Adds (and
    both inputs of every squeeze-excitation Multiply)."""
    q = quantize_model(converted("EfficientNetB0"), rules="nvidia-tf-toolkit",
                       custom_qdq_cases=["EfficientNetQDQCase"])
    got = layer_placement(q.float_model, q.onnx)
    adds = {k: v for k, v in got.items() if k.endswith("_add")}
    assert len(adds) == 9 and all(v == {0, 1} for v in adds.values()), adds
    excite = {k: v for k, v in got.items() if k.endswith("_se_excite")}
    assert len(excite) == 16 and all(v == {0, 1} for v in excite.values())


def test_mobilenetv2_case_quantizes_the_skip_of_every_block_add():
    """MobileNetV2's block Adds are Add([block input, Conv-BN projection]); the original's
    residual case leaves its one convolution branch float: input 0 quantized."""
    q = quantize_model(converted("MobileNetV2"), rules="nvidia-tf-toolkit",
                       custom_qdq_cases=["MobileNetQDQCase"])
    got = layer_placement(q.float_model, q.onnx)
    adds = {k: v for k, v in got.items() if k.endswith("_add")}
    assert len(adds) == 10 and all(v == {0} for v in adds.values()), adds


def test_inception_case_quantizes_every_maxpool_input():
    q = quantize_model(converted("InceptionV3"), rules="nvidia-tf-toolkit",
                       custom_qdq_cases=["InceptionQDQCase"])
    got = layer_placement(q.float_model, q.onnx)
    classes = {la.name: la.class_name for la in LayerGraph(q.float_model).layers}
    pools = {k for k, c in classes.items() if c == "MaxPooling2D"}
    assert len(pools) == 4 and all(got.get(p) == {0} for p in pools), \
        {p: got.get(p) for p in pools}


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable"))
        return kib / 2**20
    except (OSError, StopIteration):
        return 0.0


# One model per keras.applications family of Keras 3.15. MobileNetV3 lints clean through the
# layout pass, ConvNeXt through the depthwise rewrite of its grouped Conv2Ds, VGG16 through
# tracing with its weights captured by value (its conversion peaks at 12 GB of RAM, so it
# runs where 16 GB are available).
VGG = pytest.param("VGG16", marks=pytest.mark.skipif(
    _available_gib() < 16, reason="VGG16's conversion needs about 12 GB of RAM"))
CONFORMANCE = ["ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0",
               "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2",
               "MobileNetV3Small", "NASNetMobile", "ResNet50", "ResNet50V2", VGG, "Xception"]


@pytest.mark.parametrize("name", CONFORMANCE)
def test_own_output_lints_clean_with_calibrated_scales(name):
    """With real (different) scales a re-quantization or a Q/DQ on a fused output would
    show; placeholder scales are all equal and hide the first."""
    import keras
    import numpy as np

    from qdq_onnx import pipeline

    keras.utils.set_random_seed(0)  # an unseeded init made DenseNet's scales vary run to run
    model = getattr(keras.applications, name)(weights=None)
    size = [d or 224 for d in model.input_shape[1:3]]
    x = np.random.default_rng(0).random((2, *size, 3), dtype=np.float32)
    q = quantize_model(model, calibration_data=x)
    shipped = q.export()  # INT8 with the FP16 remainder: what qdq-onnx writes
    report = pipeline.lint(shipped)  # strongly typed: an unrecorded FP32 op is a finding
    assert report.findings == [], [(f.id, f.node, f.message) for f in report.findings[:5]]
    assert report.layers and all(layer.quantized for layer in report.layers)
    assert report.precisions.get("fp16", 0) > 0
    _check_typed_file(shipped, q.float_model, x)


def _check_typed_file(typed, float_model, x):
    """Valid for the installed onnx (full check) and run by the installed onnxruntime (CI
    runs this on the newest too), graph I/O types as the float model's, no Cast chain."""
    import numpy as np
    import onnx

    from qdq_onnx.graph.sessions import inference_session

    onnx.checker.check_model(typed, full_check=True)
    name = typed.graph.input[0].name
    got = inference_session(typed).run(None, {name: x})[0]
    want = inference_session(float_model).run(None, {name: x})[0]
    assert got.dtype == want.dtype and got.shape == want.shape and np.isfinite(got).all()
    io = [v.type.tensor_type.elem_type for v in (*typed.graph.input, *typed.graph.output)]
    assert io == [v.type.tensor_type.elem_type
                  for v in (*float_model.graph.input, *float_model.graph.output)]
    producers = {o: n for n in typed.graph.node for o in n.output}
    assert not [n.name for n in typed.graph.node if n.op_type == "Cast"
                and getattr(producers.get(n.input[0]), "op_type", None) == "Cast"]
