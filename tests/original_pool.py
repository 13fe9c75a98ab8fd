"""The eight test networks of NVIDIA's Keras quantization toolkit (its
`tests/network_pool.py`: Bilbo, Frodo, Sam, Otho, Lotho, Lobelia, Merry, Pippin), rebuilt
here from their published structure for the parity tests: VGG-like, ResNet-like with plain
and BatchNorm identity and projection-shortcut blocks, Conv/Depthwise/Dense only, and an
Inception block."""

from __future__ import annotations


def _keras():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _conv(L, x, filters, k, strides=1):
    return L.Conv2D(filters, k, strides=strides, padding="same")(x)


def _relu_bn(L, x):
    return L.ReLU()(L.BatchNormalization()(x))


def _identity(L, x, bn: bool):
    y = _conv(L, x, 12, 3)
    y = _relu_bn(L, y) if bn else L.ReLU()(y)
    y = _conv(L, y, 24, 3)
    if bn:
        y = L.BatchNormalization()(y)
    return L.ReLU()(L.Add()([y, x]))


def _projection(L, x, bn: bool):
    y = _conv(L, x, 12, 3)
    y = _relu_bn(L, y) if bn else L.ReLU()(y)
    y = _conv(L, y, 24, 3, strides=2)
    short = _conv(L, x, 24, 3, strides=2)
    if bn:
        y, short = L.BatchNormalization()(y), L.BatchNormalization()(short)
    return L.ReLU()(L.Add()([y, short]))


def _head(L, x):
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    return L.Dense(10)(L.ReLU()(L.Dense(100)(x)))


def bilbo():
    k = _keras()
    L = k.layers
    i = k.Input((28, 28))
    x = L.Reshape((28, 28, 1))(i)
    for f in (516, 252, 126, 64, 32, 16, 8):
        x = L.ReLU()(L.Conv2D(f, 3)(x))
    return k.Model(i, _head(L, x), name="Bilbo")


def _resnet_stem(k, L, shape, bn: bool, filters=(12, 24)):
    i = k.Input(shape)
    x = L.Reshape((*shape, 1))(i) if len(shape) == 2 else i
    for f in filters:
        x = L.Conv2D(f, 3)(x)
        x = _relu_bn(L, x) if bn else L.ReLU()(x)
    return i, x


def frodo():
    k = _keras()
    L = k.layers
    i, x = _resnet_stem(k, L, (32, 32, 3), bn=False)
    x = _projection(L, _identity(L, L.MaxPooling2D(2)(x), False), False)
    return k.Model(i, _head(L, x), name="Frodo")


def sam():
    k = _keras()
    L = k.layers
    i, x = _resnet_stem(k, L, (32, 32, 3), bn=False)
    x = _projection(L, _identity(L, _identity(L, x, False), False), False)
    return k.Model(i, _head(L, x), name="Sam")


def pippin():
    k = _keras()
    L = k.layers
    i, x = _resnet_stem(k, L, (28, 28), bn=True)
    x = _projection(L, _identity(L, x, True), True)
    return k.Model(i, _head(L, x), name="Pippin")


def _small(name, body):
    k = _keras()
    L = k.layers
    i = k.Input((28, 28))
    return k.Model(i, body(L, L.Reshape((28, 28, 1))(i)), name=name)


def otho():
    return _small("Otho", lambda L, x: L.Flatten()(L.ReLU()(L.Conv2D(2, 3)(
        L.ReLU()(L.Conv2D(2, 3)(x))))))


def lotho():
    return _small("Lotho", lambda L, x: L.Flatten()(L.ReLU()(L.DepthwiseConv2D(3)(
        L.ReLU()(L.DepthwiseConv2D(3)(x))))))


def lobelia():
    return _small("Lobelia", lambda L, x: L.Dense(10)(L.ReLU()(L.Dense(100)(L.Flatten()(x)))))


def merry():
    k = _keras()
    L = k.layers
    i, x = _resnet_stem(k, L, (28, 28), bn=True, filters=(8, 12))
    a = _relu_bn(L, L.Conv2D(12, 1, padding="same")(x))
    b = _relu_bn(L, _conv(L, _conv(L, x, 12, 1), 24, 5))
    # (the original also builds a 3x3 branch that the Concatenate leaves out of the model)
    return k.Model(i, _head(L, L.Concatenate()([a, b])), name="Merry")


NETWORKS = {f.__name__: f for f in (bilbo, frodo, sam, otho, lotho, lobelia, merry, pippin)}
