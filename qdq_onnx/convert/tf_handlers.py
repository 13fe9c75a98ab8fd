"""TF ops tf2onnx 1.17 cannot convert, mapped through its own custom-op-handler mechanism
(`custom_op_handlers=`; tf2onnx is not patched).

- `Erfc`: Keras's exact GELU is `0.5 * x * erfc(-x / sqrt(2))`; tf2onnx has no handler for
  Erfc ("No Op registered"), so every Keras transformer MLP with `activation="gelu"` and
  ConvNeXt failed to convert. ONNX has Erf (opset 9+): erfc(x) = 1 - erf(x).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _erfc(ctx: Any, node: Any, name: str, args: list) -> Any:
    """tf2onnx has already retyped the node to Erf (the handler's `onnx_op`); put
    `1 - erf(x)` after it."""
    from tf2onnx import utils

    dtype = ctx.get_dtype(node.output[0])
    one = ctx.make_const(utils.make_name(f"{node.name}_one"),
                         np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
    sub = ctx.insert_new_node_on_output("Sub", node.output[0],
                                        name=utils.make_name(f"{node.name}_erfc"),
                                        inputs=[one.output[0], node.output[0]])
    ctx.set_dtype(sub.output[0], dtype)
    ctx.copy_shape(node.output[0], sub.output[0])
    return node


def custom_op_handlers() -> dict[str, tuple[Any, list[str]]]:
    """A fresh handler table for `tf2onnx.convert.from_function(custom_op_handlers=...)`."""
    return {"Erfc": (_erfc, ["Erf"])}
