"""The "network pool" of small Keras models (after the original toolkit's test approach) and
a placement validator that maps ONNX nodes back to Keras layers through the layer map."""

from __future__ import annotations

import numpy as np
import onnx

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.graph.layers import LayerGraph


def _keras():
    import keras

    keras.utils.set_random_seed(7)
    return keras


def conv_only():
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, name="conv_a")(i)
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    return k.Model(i, k.layers.Conv2D(4, 1, name="conv_c")(x), name="conv_only")


def depthwise_only():
    k = _keras()
    i = k.Input((16, 16, 4), name="image")
    x = k.layers.DepthwiseConv2D(3, name="dw_a")(i)
    return k.Model(i, k.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw_b")(x),
                   name="depthwise_only")


def dense_only():
    k = _keras()
    i = k.Input((8, 8), name="features")
    x = k.layers.Flatten(name="flat")(i)
    x = k.layers.Dense(32, activation="relu", name="fc1")(x)
    return k.Model(i, k.layers.Dense(10, name="fc2")(x), name="dense_only")


def vgg_like():
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(i)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = k.layers.MaxPooling2D(name="pool1")(x)
    x = k.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = k.layers.AveragePooling2D(2, name="pool2")(x)
    x = k.layers.Flatten(name="flat")(x)
    return k.Model(i, k.layers.Dense(10, name="fc")(x), name="vgg_like")


def tiny_resnet():
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, padding="same", name="stem")(i)
    x = k.layers.ReLU(name="stem_relu")(x)
    y = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="res_a")(x)
    y = k.layers.Conv2D(8, 3, padding="same", name="res_b")(y)
    x = k.layers.Add(name="add")([x, y])
    x = k.layers.ReLU(name="out_relu")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(i, k.layers.Dense(10, name="fc")(x), name="tiny_resnet")


def resnet_bn():
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, padding="same", name="stem")(i)
    x = k.layers.BatchNormalization(name="stem_bn")(x)
    x = k.layers.ReLU(name="stem_relu")(x)
    y = k.layers.Conv2D(8, 3, padding="same", name="res_a")(x)
    y = k.layers.BatchNormalization(name="res_a_bn")(y)
    y = k.layers.ReLU(name="res_a_relu")(y)
    y = k.layers.Conv2D(8, 3, padding="same", name="res_b")(y)
    y = k.layers.BatchNormalization(name="res_b_bn")(y)
    x = k.layers.Add(name="add")([y, x])
    x = k.layers.ReLU(name="out_relu")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    model = k.Model(i, k.layers.Dense(10, name="fc")(x), name="resnet_bn")
    rng = np.random.default_rng(3)
    for layer in model.layers:  # non-trivial statistics, so BN is a real per-channel affine
        if isinstance(layer, k.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    return model


def inception_block():
    k = _keras()
    i = k.Input((16, 16, 8), name="image")
    a = k.layers.Conv2D(4, 1, activation="relu", name="b1_1x1")(i)
    b = k.layers.Conv2D(4, 1, activation="relu", name="b2_1x1")(i)
    b = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="b2_3x3")(b)
    c = k.layers.MaxPooling2D(3, strides=1, padding="same", name="b3_pool")(i)
    c = k.layers.Conv2D(4, 1, activation="relu", name="b3_1x1")(c)
    x = k.layers.Concatenate(name="concat")([a, b, c])
    return k.Model(i, k.layers.Conv2D(8, 1, name="head")(x), name="inception_block")


POOL = {f.__name__: f for f in (conv_only, depthwise_only, dense_only, vgg_like, tiny_resnet,
                                resnet_bn, inception_block)}


def layer_placement(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto
                    ) -> dict[str, set]:
    """Per Keras layer, what is quantized: {"input", "weight"} for weighted layers, the
    quantized input indices for the others. Every DQ-fed slot must belong to some layer."""
    layers = LayerGraph(float_model)
    q_index = GraphIndex(qdq_model.graph)
    fed: set[tuple[str, int]] = set()
    for node in q_index.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, t in enumerate(node.input):
            p = q_index.producer.get(t)
            if p is not None and p.op_type == "DequantizeLinear":
                fed.add((node.name, i))
    out: dict[str, set] = {}
    claimed: set[tuple[str, int]] = set()
    f_index = layers.index
    for layer in layers.layers:
        got: set = set()
        for a in layer.anchors:
            node = f_index.by_name[a]
            weighted = len(layer.anchors) > 1 or (
                len(node.input) > 1 and f_index.is_constant(node.input[1])
                and node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"))
            if weighted:
                if (a, 0) in fed:
                    got.add("input")
                    claimed.add((a, 0))
                if (a, 1) in fed:
                    got.add("weight")
                    claimed.add((a, 1))
            else:
                live = f_index.live_inputs(node)
                for k, slot in enumerate(live):
                    if (a, slot) in fed:
                        got.add(k)
                        claimed.add((a, slot))
        out[layer.name] = got
    stray = fed - claimed
    assert not stray, f"Q/DQ on inputs no Keras layer accounts for: {sorted(stray)}"
    return out
