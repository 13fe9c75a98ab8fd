"""The names of a converted Keras model's graph outputs: a dict's keys or the output layers'
names where they are plain, unique identifiers, positional names (`output`, `output_<i>`)
where not."""

from __future__ import annotations

import re
from typing import Any

import onnx

from qdq_onnx.graph.names import FreshNames, positional_output_names

# An output name that stays a plain identifier everywhere it is used: a TensorRT binding, a
# dict key, a file name, and `labels__<name>`, the training graph's label input.
_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def output_names(wanted: list[str] | None, count: int, taken: set[str]) -> list[str]:
    """Unique names for `count` graph outputs: each `wanted` name (a dict's key, an output
    layer's name) where it is a plain identifier, given once and not the name of another
    tensor in `taken`; its positional name (`positional_output_names`) where not, made
    unique with `_<k>` if a wanted name or tensor already has it."""
    positional = positional_output_names(count)
    if wanted is None or len(wanted) != count:
        wanted = positional
    chosen = [w if isinstance(w, str) and _OUTPUT_NAME.fullmatch(w) and wanted.count(w) == 1
              and w not in taken else None for w in wanted]
    fresh = FreshNames(set(taken) | {c for c in chosen if c is not None})
    return [fresh(positional[i]) if c is None else c for i, c in enumerate(chosen)]


def rename_outputs(model: onnx.ModelProto, wanted: list[str] | None = None) -> None:
    """Name the graph outputs `wanted` (a dict's keys, or the output layers' names), with
    `output_names`' fallbacks; `output` / `output_<i>` (Keras order) when None."""
    g = model.graph
    current = [o.name for o in g.output]
    if len(set(current)) < len(current):  # one tensor given twice: each output its own
        for i, o in enumerate(g.output):
            if o.name in current[:i]:
                copy = f"{o.name}__output_{i}"
                g.node.append(onnx.helper.make_node("Identity", [o.name], [copy],
                                                    name=copy))
                o.name = copy
        current = [o.name for o in g.output]
    taken = {t for n in g.node for t in (*n.input, *n.output)}
    taken |= {t.name for t in (*g.input, *g.initializer)}
    taken -= set(current)
    mapping = dict(zip(current, output_names(wanted, len(current), taken)))
    for node in g.node:
        for i, t in enumerate(node.output):
            if t in mapping:
                node.output[i] = mapping[t]
        for i, t in enumerate(node.input):
            if t in mapping:
                node.input[i] = mapping[t]
    for o in g.output:
        o.name = mapping[o.name]


def keras_output_names(model: Any, outputs: Any) -> list[str] | None:
    """The names Keras gives the model's outputs, in graph output order: a dict's keys
    (sorted, as tf.nest flattens it), else the output layers' names (`model.output_names`,
    Keras 3 and tf_keras functional models; None for models that have none)."""
    if isinstance(outputs, dict):
        return sorted(outputs)
    names = getattr(model, "output_names", None)
    if not names or isinstance(names, str):
        return None
    return [str(n) for n in names]
