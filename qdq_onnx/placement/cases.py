"""CustomQDQInsertionCase and the original toolkit's built-in cases, on the layer view.

A case inspects the model (a LayerGraph: layers by Keras name/class with predecessors and
successors) and returns a QuantizationSpec of deviations from the default policy. Returned
entries are merged after the user's spec: a layer the user named is never touched by a case.
"""

from __future__ import annotations

from qdq_onnx.graph import ops
from qdq_onnx.graph.layers import Layer, LayerGraph
from qdq_onnx.placement.spec import QuantizationSpec

_ACTIVATIONS = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"}


class CustomQDQInsertionCase:
    """Base class: override `info()` and `case(model, quantization_spec)`."""

    def info(self) -> str:
        """A one-line description of what the case changes (shown in plans and logs)."""
        return self.__class__.__doc__ or self.__class__.__name__

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        """Inspect `model` (a LayerGraph: `model.layers`, each with name, class_name,
        inputs, outputs) and return a QuantizationSpec of deviations from the default policy.
        `quantization_spec` is a copy of the user's spec (or None): layers it names are the
        user's and must not be touched."""
        raise NotImplementedError(f"{self.__class__.__name__}.case() is not implemented")


def _user_named(qspec: QuantizationSpec | None, name: str) -> bool:
    return qspec is not None and name in qspec.named()


def _is(layer: Layer, keras_class: str, onnx_ops: tuple[str, ...]) -> bool:
    return layer.class_name == keras_class or layer.class_name in onnx_ops


def _is_conv(layer: Layer) -> bool:
    return ops.is_convolution_class(layer.class_name)


def _is_bn(layer: Layer) -> bool:
    return "BatchNorm" in layer.class_name


_CHAINS = (("conv",), ("bn", "conv"), ("act", "bn", "conv"), ("drop", "act", "bn", "conv"))


def _kind(layer: Layer) -> str:
    if _is_conv(layer):
        return "conv"
    if _is_bn(layer):
        return "bn"
    if layer.class_name in _ACTIVATIONS:
        return "act"
    return "drop" if layer.class_name == "Dropout" else "other"


def _conv_branch(parent: Layer, keras_links: bool) -> bool:
    """The original's residual match: the input ends in Conv, Conv-BN, Conv-BN-Act or
    Conv-BN-Act-Dropout, and its last layer feeds nothing else.

    On a layer view built from ONNX connectivity (no Keras links), a folded BatchNorm and a
    removed Dropout have no layer, so an activation right after a Conv stands for
    Conv-BN-Act(-Dropout) there."""
    if len(parent.outputs) != 1:
        return False
    chain, layer = [], parent
    while layer is not None and len(chain) < 4:
        chain.append(_kind(layer))
        layer = layer.inputs[0] if layer.inputs else None
    if any(tuple(chain[:len(c)]) == c for c in _CHAINS):
        return True
    return not keras_links and tuple(chain[:2]) == ("act", "conv")


class ResidualConnectionQDQCase(CustomQDQInsertionCase):
    """Residual Add: leave the first Conv(-BN)(-Act)(-Dropout) input float, quantize the
    others; quantize all inputs when none matches (the original toolkit's rule)."""

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        out = QuantizationSpec()
        for layer in model.layers:
            if not _is(layer, "Add", ("Add", "Sum")) or _user_named(quantization_spec,
                                                                    layer.name):
                continue
            matched = [i for i, parent in enumerate(layer.inputs)
                       if _conv_branch(parent, model.keras_links)]
            indices = [i for i in range(len(layer.inputs)) if not matched or i != matched[0]]
            if indices:
                out.add(layer.name, quantize_input=True, quantize_weight=False,
                        quantization_index=indices)
        return out


class BNQDQCase(CustomQDQInsertionCase):
    """Quantize the input of a BatchNorm that does not follow a Conv (ResNet v2)."""

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        out = QuantizationSpec()
        for layer in model.layers:
            if not _is(layer, "BatchNormalization", ("BatchNormalization",)) or not layer.nodes:
                continue
            parent = layer.inputs[0] if layer.inputs else None
            if parent is not None and _is_conv(parent):
                continue
            if not _user_named(quantization_spec, layer.name):
                out.add(layer.name, quantize_input=True, quantize_weight=False)
        return out


class MaxPoolQDQCase(CustomQDQInsertionCase):
    """Quantize every MaxPool input (ResNet v2, Inception)."""

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        out = QuantizationSpec()
        for layer in model.layers:
            if _is(layer, "MaxPooling2D", ("MaxPool",)) and not _user_named(
                    quantization_spec, layer.name):
                out.add(layer.name, quantize_input=True, quantize_weight=False)
        return out


class _Bundle(CustomQDQInsertionCase):
    parts: tuple[type[CustomQDQInsertionCase], ...] = ()

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        out = QuantizationSpec()
        for part in self.parts:
            out.layers.extend(part().case(model, quantization_spec).layers)
        return out


class ResNetV1QDQCase(_Bundle):
    """ResNet v1: residual connections."""

    parts = (ResidualConnectionQDQCase,)


class ResNetV2QDQCase(_Bundle):
    """ResNet v2: residual connections, BatchNorm not after Conv, MaxPool."""

    parts = (ResidualConnectionQDQCase, BNQDQCase, MaxPoolQDQCase)


class MobileNetQDQCase(_Bundle):
    """MobileNet: residual connections."""

    parts = (ResidualConnectionQDQCase,)


class InceptionQDQCase(_Bundle):
    """Inception: MaxPool inputs."""

    parts = (MaxPoolQDQCase,)


class EfficientNetQDQCase(_Bundle):
    """EfficientNet: residual connections and both inputs of every Multiply (SE block)."""

    parts = (ResidualConnectionQDQCase,)

    def case(self, model: LayerGraph, quantization_spec: QuantizationSpec | None
             ) -> QuantizationSpec:
        out = super().case(model, quantization_spec)
        for layer in model.layers:
            if layer.class_name == "Multiply" and not _user_named(quantization_spec,
                                                                   layer.name):
                out.add(layer.name, quantize_input=True, quantize_weight=False,
                        quantization_index=[0, 1])
        return out


BUILTIN_CASES: dict[str, type[CustomQDQInsertionCase]] = {
    c.__name__: c for c in (ResidualConnectionQDQCase, BNQDQCase, MaxPoolQDQCase,
                            ResNetV1QDQCase, ResNetV2QDQCase, MobileNetQDQCase,
                            EfficientNetQDQCase, InceptionQDQCase)
}
