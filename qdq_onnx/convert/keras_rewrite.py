"""Keras models that tf2onnx cannot convert as they are: grouped convolutions rewritten on a
clone, and very large weights captured by value while tracing (the user's model is left as
it was).

Keras 3's TensorFlow backend runs a grouped convolution (Conv2D with groups > 1, ConvNeXt's
7x7 depthwise convolutions) through a nested function compiled with XLA
(`tf.function(jit_compile=True)`, because TensorFlow's CPU kernels lack grouped
convolution), and tf2onnx 1.17 leaves that nested call unconverted. When every group has
one input channel the layer is a depthwise convolution, which TensorFlow runs natively.
"""

from __future__ import annotations

import contextlib
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


def weight_bytes(model: Any) -> int:
    """Bytes of all the model's weights (trainable and not)."""
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize
                   for v in getattr(model, "weights", [])))


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
