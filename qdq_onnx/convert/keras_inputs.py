"""The inputs a Keras model declares, in its own structure: a single tensor, a list or tuple
(Keras order), or a dict by name (KerasHub's text backbones take `{"token_ids": ...,
"segment_ids": ..., "padding_mask": ...}`), each with its dtype kept (integer token ids stay
integer). Works for Keras 3 and Keras 2 (`tf_keras`) models."""

from __future__ import annotations

from typing import Any

from qdq_onnx.errors import QdqError


def _declared(model: Any) -> Any:
    """The model's symbolic inputs in the structure it is called with, or None."""
    for attr in ("_inputs_struct", "_nested_inputs"):  # Keras 3, tf_keras
        struct = getattr(model, attr, None)
        if struct is not None:
            return struct
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _tensor_name(t: Any, fallback: str) -> str:
    name = (getattr(t, "name", "") or "").split(":")[0]
    if not name or name.startswith("keras_tensor"):
        return fallback
    return name


def _dtype(t: Any, tf: Any) -> Any:
    dtype = getattr(t, "dtype", "float32")
    return tf.as_dtype(getattr(dtype, "name", dtype))


class InputStructure:
    """The model's inputs as flat TF specs (one per ONNX graph input, in order) and the way
    to pack flat tensors back into the structure the model is called with."""

    def __init__(self, struct: Any, specs: list[Any], tf: Any) -> None:
        self._struct = struct
        self.specs = specs
        self._tf = tf

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def pack(self, flat: tuple[Any, ...]) -> Any:
        if self._struct is None:
            return flat[0] if len(flat) == 1 else list(flat)
        return self._tf.nest.pack_sequence_as(self._struct, list(flat))


def input_structure(model: Any, input_shape: Any, tf: Any) -> InputStructure:
    """The InputStructure of an in-memory Keras model; `input_shape` ((None, H, W, C) or a
    list of them) for a subclassed model that was never built."""
    struct = _declared(model)
    if struct is not None:
        if isinstance(struct, dict):
            keys = list(struct)  # tf.nest flattens a dict in sorted key order
            flat = [struct[k] for k in sorted(keys)]
            names = sorted(keys)
        else:
            flat = tf.nest.flatten(struct)
            names = [_tensor_name(t, "input" if len(flat) == 1 else f"input_{i}")
                     for i, t in enumerate(flat)]
            if len(set(names)) < len(names):
                names = [f"input_{i}" for i in range(len(flat))]
        specs = [tf.TensorSpec((None, *tuple(t.shape)[1:]), _dtype(t, tf), name=n)
                 for t, n in zip(flat, names)]
        return InputStructure(struct, specs, tf)
    if input_shape is None:
        shapes_dict = getattr(model, "_build_shapes_dict", None) or {}
        if len(shapes_dict) == 1:
            input_shape = next(iter(shapes_dict.values()))
    if input_shape is None:
        raise QdqError("the model has no symbolic inputs (subclassed and never built): pass "
                       "input_shape=(None, H, W, C) or call the model on a batch first")
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    specs = [tf.TensorSpec((None, *tuple(s)[1:]), tf.float32,
                           name="input" if len(shapes) == 1 else f"input_{i}")
             for i, s in enumerate(shapes)]
    return InputStructure(None, specs, tf)
