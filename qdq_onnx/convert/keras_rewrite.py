"""Keras models that tf2onnx cannot convert as they are: grouped convolutions rewritten on a
clone, and very large weights captured by value while tracing (the user's model is left as
it was).

Keras 3's TensorFlow backend runs a grouped convolution (Conv2D with groups > 1, ConvNeXt's
7x7 depthwise convolutions) through a nested function compiled with XLA
(`tf.function(jit_compile=True)`, because TensorFlow's CPU kernels lack grouped
convolution), and tf2onnx 1.17 leaves that nested call unconverted. When every group has
one input channel the layer is a depthwise convolution, which TensorFlow runs natively
(rewritten on a clone, as before). Any other group size is traced as the plain TF `Conv2D`
op, whose filter then has fewer input channels than the input: a graph never executed by
TensorFlow's CPU kernels, and tf2onnx's Conv handler writes it as one ONNX `Conv` with
`group` = input channels / filter input channels (see `plain_grouped_convolutions`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np


def _is_depthwise_grouped(layer: Any) -> bool:
    if layer.__class__.__name__ != "Conv2D" or getattr(layer, "groups", 1) <= 1:
        return False
    return tuple(layer.kernel.shape)[2] == 1  # one input channel per group


def _as_depthwise(layer: Any, keras: Any) -> Any:
    cfg = layer.get_config()
    channels = layer.groups  # == input channels when each group has one
    return keras.layers.DepthwiseConv2D(
        kernel_size=cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
        depth_multiplier=cfg["filters"] // channels, data_format=cfg["data_format"],
        dilation_rate=cfg["dilation_rate"], activation=cfg["activation"],
        use_bias=cfg["use_bias"], name=layer.name, dtype=layer.dtype_policy)


def depthwise_for_grouped(model: Any) -> tuple[Any, list[str]]:
    """(`model` or a clone in which every Conv2D whose groups each have one input channel
    is a DepthwiseConv2D with the same name and weights, the rewritten layer names).

    Only functional and sequential models can be cloned; other models come back as they
    are (their grouped convolutions then fail with conversion's one-line error)."""
    import keras

    grouped = [la.name for la in getattr(model, "layers", []) if _is_depthwise_grouped(la)]
    if not grouped:
        return model, []

    def clone(layer: Any) -> Any:
        if layer.name in grouped:
            return _as_depthwise(layer, keras)
        return layer.__class__.from_config(layer.get_config())

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except (ValueError, TypeError):  # a subclassed model: Keras cannot clone it
        return model, []
    for original, layer in zip(model.layers, copy.layers):  # clone_model keeps the order
        weights = original.get_weights()
        if not weights:
            continue
        if layer.name in grouped:
            kh, kw, _, out = weights[0].shape
            # Output channel o of group c (o = c * m + j) is depthwise channel (c, j).
            channels = layer.kernel.shape[2]
            weights[0] = weights[0].reshape(kh, kw, channels, out // channels)
        layer.set_weights(weights)
    return copy, grouped



# Above this much weight, tracing captures the weights by value (see weights_by_value):
# tf2onnx freezes variables into a GraphDef and runs grappler over it, and on VGG16 (528 MB
# of weights) that needed more than 11 GB and failed (measured); ResNet50 (98 MB) and
# ConvNeXtTiny (110 MB) stay on the plain path.
BY_VALUE_BYTES = 300 * 2**20


def _itemsize(dtype: Any) -> int:
    # Keras 3 variables name their dtype by string, tf_keras ones by tf.DType.
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).itemsize


def weight_bytes(model: Any) -> int:
    """Bytes of all the model's weights (trainable and not)."""
    return int(sum(math.prod(tuple(v.shape)) * _itemsize(v.dtype)
                   for v in getattr(model, "weights", [])))


@contextlib.contextmanager
def plain_grouped_convolutions() -> Iterator[None]:
    """While the block traces, Keras 3's TensorFlow `conv` emits a grouped convolution as
    one plain TF `Conv2D` op instead of an XLA-compiled nested call (which tf2onnx cannot
    convert). Other convolutions, and channels-first 3-D ones, keep Keras's own path.
    Tracing only: TensorFlow's CPU kernels cannot run the traced op, ONNX can."""
    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # not Keras 3 on TensorFlow: nothing to patch
        yield
        return
    import tensorflow as tf

    original = tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None,
             dilation_rate=1):
        from keras.src import backend

        fmt = backend.standardize_data_format(data_format)
        channels = inputs.shape[-1] if fmt == "channels_last" else inputs.shape[1]
        grouped = channels is not None and channels != kernel.shape[-2]
        if not grouped or (fmt == "channels_first" and len(inputs.shape) == 5):
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        return tf.nn.convolution(
            inputs, kernel, strides, padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate)

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


@contextlib.contextmanager
def weights_by_value(model: Any) -> Iterator[bool]:
    """While the block traces the model, every Keras variable reads as a constant tensor, so
    the traced function captures the weights by value: tf2onnx leaves such captures as
    graph inputs instead of freezing them, and conversion turns them back into
    initializers. The variables are restored on exit; yields whether any were swapped
    (False where Keras's TensorFlow variables do not have the expected inner value)."""
    import tensorflow as tf

    swapped = []
    try:
        for v in getattr(model, "weights", []):
            inner = getattr(v, "_value", None)
            if inner is None or not hasattr(inner, "numpy"):
                continue
            swapped.append((v, inner))
            v._value = tf.constant(inner.numpy())
        yield bool(swapped)
    finally:
        for v, inner in swapped:
            v._value = inner
