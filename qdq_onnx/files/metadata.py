"""The `metadata_props` keys qdq-onnx writes into ONNX files, and access to them."""

from __future__ import annotations

import onnx

LAYER_MAP_KEY = "qdq_onnx.layer_map"
PLAN_KEY = "qdq_onnx.plan"
SCALES_KEY = "qdq_onnx.activation_scales"
WEIGHT_BITS_KEY = "qdq_onnx.weight_bits"
TRAINING_KEY = "qdq_onnx.training"
RULE_KEY = "qdq_onnx.rule"  # on each inserted QuantizeLinear/DequantizeLinear node
CAST_KEY = "qdq_onnx.cast"  # on each Cast the remainder typing inserted: boundary | island


def get_metadata(model: onnx.ModelProto, key: str) -> str | None:
    for prop in model.metadata_props:
        if prop.key == key:
            return prop.value
    return None


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    model.metadata_props.add(key=key, value=value)
