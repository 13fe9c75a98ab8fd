"""The conformance pool of "what users bring" (issue 17): KerasHub backbones built from their
configuration (random weights, nothing downloads), hand-built models of the shapes detectors,
segmenters and text models have, and one Keras 2 (`tf_keras`) model. Each entry builds the
model and a batch of inputs in the structure the model declares (dict, list or one array),
integer where the model takes integers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PoolModel:
    name: str
    build: Callable[[], Any]
    inputs: Callable[[int], Any]  # n -> inputs as the Keras model is called with them
    kind: str  # the row's description in the docs table (docs/keras.md)


def _keras():
    import keras

    keras.utils.set_random_seed(3)
    return keras


def _rng(n: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(1000 * salt + n)


def _images(n: int, shape=(32, 32, 3)) -> np.ndarray:
    return _rng(n).uniform(0, 1, (n, *shape)).astype(np.float32)


# --- KerasHub backbones ---------------------------------------------------------------

SEQ = 16


def bert():
    import keras_hub

    _keras()
    return keras_hub.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2,
                                         hidden_dim=32, intermediate_dim=64, dropout=0.0,
                                         max_sequence_length=SEQ)


def token_inputs(n: int) -> dict[str, np.ndarray]:
    rng = _rng(n, 1)
    lengths = rng.integers(4, SEQ + 1, n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    return {"token_ids": (rng.integers(1, 64, (n, SEQ)) * mask).astype(np.int32),
            "segment_ids": (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int32)
            .repeat(n, 0) * mask,
            "padding_mask": mask}


def vit():
    import keras_hub

    _keras()
    return keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                        num_heads=2, hidden_dim=32, mlp_dim=64)


def mit():
    import keras_hub

    _keras()
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2], image_shape=(32, 32, 3), hidden_dims=[16, 32])


def resnet():
    import keras_hub

    _keras()
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3))


# --- hand-built ---------------------------------------------------------------------


def resnext_block():
    k = _keras()
    i = k.Input((16, 16, 16), name="image")
    x = k.layers.Conv2D(16, 1, activation="relu", name="reduce")(i)
    x = k.layers.Conv2D(16, 3, padding="same", groups=4, activation="relu", name="grouped")(x)
    x = k.layers.Conv2D(16, 1, name="expand")(x)
    x = k.layers.ReLU(name="out_relu")(k.layers.Add(name="residual")([x, i]))
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(i, k.layers.Dense(10, name="fc")(x), name="resnext_block")


def unet():
    k = _keras()
    i = k.Input((32, 32, 1), name="image")
    e1 = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="enc1")(i)
    p1 = k.layers.MaxPooling2D(name="down1")(e1)
    e2 = k.layers.Conv2D(16, 3, padding="same", activation="relu", name="enc2")(p1)
    p2 = k.layers.MaxPooling2D(name="down2")(e2)
    b = k.layers.Conv2D(16, 3, padding="same", activation="relu", name="bottom")(p2)
    u2 = k.layers.Conv2DTranspose(16, 2, strides=2, name="up2")(b)
    d2 = k.layers.Conv2D(16, 3, padding="same", activation="relu", name="dec2")(
        k.layers.Concatenate(name="skip2")([u2, e2]))
    u1 = k.layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up1")(d2)
    d1 = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="dec1")(
        k.layers.Concatenate(name="skip1")([u1, e1]))
    return k.Model(i, k.layers.Conv2D(2, 1, name="mask_logits")(d1), name="unet")


def densenet_avgpool():
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(i)
    y = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="dense1")(x)
    x = k.layers.Concatenate(name="cat1")([x, y])
    x = k.layers.Conv2D(8, 1, activation="relu", name="transition")(x)
    x = k.layers.AveragePooling2D(2, name="avg_pool")(x)
    y = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="dense2")(x)
    x = k.layers.Concatenate(name="cat2")([x, y])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(i, k.layers.Dense(10, name="fc")(x), name="densenet_avgpool")


def two_inputs():
    k = _keras()
    img = k.Input((16, 16, 3), name="image")
    meta = k.Input((4,), name="meta")
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv")(img)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    m = k.layers.Dense(8, activation="relu", name="meta_fc")(meta)
    x = k.layers.Concatenate(name="join")([x, m])
    return k.Model([img, meta], k.layers.Dense(3, name="fc")(x), name="two_inputs")


def two_inputs_data(n: int) -> list[np.ndarray]:
    return [_images(n, (16, 16, 3)), _rng(n, 2).normal(size=(n, 4)).astype(np.float32)]


def two_outputs():
    """A detector-shaped model: a class head and a box head."""
    k = _keras()
    i = k.Input((16, 16, 3), name="image")
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv1")(i)
    x = k.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    cls = k.layers.Dense(5, name="class_logits")(x)
    box = k.layers.Dense(4, name="box")(x)
    return k.Model(i, [cls, box], name="two_outputs")


def _recurrent_text(layer: str):
    """Embedding over int32 tokens -> a recurrent layer -> Dense."""
    k = _keras()
    i = k.Input((12,), dtype="int32", name="tokens")
    x = k.layers.Embedding(50, 16, name="embed")(i)
    x = getattr(k.layers, layer)(16, name=layer.lower())(x)
    return k.Model(i, k.layers.Dense(4, name="fc")(x), name=f"{layer.lower()}_text")


def lstm_text():
    return _recurrent_text("LSTM")


def gru_text():
    return _recurrent_text("GRU")


def lstm_tokens(n: int) -> np.ndarray:
    return _rng(n, 3).integers(0, 50, (n, 12)).astype(np.int32)


def tf_keras_cnn():
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    i = tf_keras.Input((16, 16, 3), name="image")
    x = tf_keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(i)
    x = tf_keras.layers.MaxPooling2D(name="pool")(x)
    x = tf_keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = tf_keras.layers.Flatten(name="flat")(x)
    return tf_keras.Model(i, tf_keras.layers.Dense(10, name="fc")(x), name="tf_keras_cnn")


def _img(shape):
    return lambda n: _images(n, shape)


POOL = [
    PoolModel("bert", bert, token_inputs, "KerasHub BertBackbone: dict of int32 inputs"),
    PoolModel("vit", vit, _img((32, 32, 3)), "KerasHub ViTBackbone"),
    PoolModel("mit", mit, _img((32, 32, 3)), "KerasHub MiTBackbone (SegFormer encoder)"),
    PoolModel("resnet", resnet, _img((32, 32, 3)), "KerasHub ResNetBackbone"),
    PoolModel("resnext_block", resnext_block, _img((16, 16, 16)),
              "ResNeXt block (grouped conv, 4 channels per group)"),
    PoolModel("unet", unet, _img((32, 32, 1)), "U-Net with Conv2DTranspose"),
    PoolModel("densenet_avgpool", densenet_avgpool, _img((16, 16, 3)),
              "DenseNet-style block with AveragePooling2D"),
    PoolModel("two_inputs", two_inputs, two_inputs_data, "image + features (list inputs)"),
    PoolModel("two_outputs", two_outputs, _img((16, 16, 3)), "class and box heads"),
    PoolModel("lstm_text", lstm_text, lstm_tokens, "Embedding + LSTM text classifier"),
    PoolModel("gru_text", gru_text, lstm_tokens, "Embedding + GRU text classifier"),
    PoolModel("tf_keras_cnn", tf_keras_cnn, _img((16, 16, 3)), "Keras 2 (tf_keras) model"),
]

BY_NAME = {p.name: p for p in POOL}


def keras_outputs(model: Any, inputs: Any) -> list[np.ndarray]:
    """The model's outputs as a flat list in ONNX output order (tf.nest order)."""
    import tensorflow as tf

    out = model(inputs, training=False)
    return [np.asarray(t) for t in tf.nest.flatten(out)]
