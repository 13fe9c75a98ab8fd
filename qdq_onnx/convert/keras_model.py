"""Keras -> ONNX through tf2onnx, recording the layer map. With `keras_rewrite`, the only
module importing TensorFlow.

Every model kind converts through a traced `tf.function` (functional, Sequential and
subclassed models alike: tracing does not need `clone_model`, which is why the original
toolkit could not take subclassed models).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import onnx

from qdq_onnx.convert.keras_check import (
    SHAPE_OPTIMIZERS,
    conversion_problem,
    keras_reference,
    reference_batch,
    without_optimizers,
)
from qdq_onnx.convert.keras_inputs import input_structure
from qdq_onnx.convert.keras_outputs import keras_output_names, rename_outputs
from qdq_onnx.convert.keras_rewrite import (
    BY_VALUE_BYTES,
    depthwise_for_grouped,
    plain_grouped_convolutions,
    weight_bytes,
    weights_by_value,
)
from qdq_onnx.convert.prepare import prepare_model
from qdq_onnx.convert.tf_handlers import custom_op_handlers
from qdq_onnx.errors import QdqError
from qdq_onnx.graph.layers import LayerMap, LayerRecord, write_layer_map
from qdq_onnx.graph.ops import WEIGHTED_OPS
from qdq_onnx.progress import captured_stderr

_SUFFIX = re.compile(r"^(.*)_\d+$")
_GENERATED = re.compile(r"__\d+$")


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN reorders float sums (tiny run-to-run differences) and logs about it at import.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        with captured_stderr():  # absl/C++ start-up chatter
            import tensorflow as tf
            import tf2onnx
    except ImportError as exc:
        raise QdqError("Keras conversion needs TensorFlow and tf2onnx: pip install "
                       "'qdq-onnx[keras]'") from exc
    return tf, tf2onnx


def load_keras_model(path: str | os.PathLike) -> Any:
    """Load a `.keras`/`.h5` file (Keras 3) or a SavedModel folder."""
    tf, _ = _import_tf()
    import keras

    p = Path(path)
    if not p.exists():
        raise QdqError(f"{p}: no such file or folder")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise QdqError(f"{p}: a folder but not a SavedModel (no saved_model.pb)")
        return tf.saved_model.load(str(p))
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise QdqError(f"{p}: expected a .keras or .h5 file, or a SavedModel folder")
    try:
        return keras.models.load_model(str(p), compile=False)
    except Exception as exc:  # Keras raises many unrelated types for unreadable files
        raise QdqError(f"{p}: cannot load the Keras model: {exc}") from exc


def _flat_layers(model: Any) -> list[Any]:
    out: list[Any] = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_flat_layers(layer))
    return out


def _scope_owner(text: str, names: set[str]) -> str | None:
    """The layer a TF name scope belongs to.

    Traced Keras 3 scopes are the layer name plus a uniquifying `_<k>` suffix (layer `conv2d`
    -> `conv2d_1`, layer `conv2d_1` -> `conv2d_1_2`), so stripping exactly one suffix is
    unambiguous. The deepest matching component wins (nested models)."""
    parts = text.split(":")[0].split("/")
    found = None
    for comp in parts[1:] if len(parts) > 1 else parts:
        m = _SUFFIX.match(comp)
        if m and m.group(1) in names:
            found = m.group(1)
    if found is None:
        for comp in parts[1:]:
            if comp in names:
                found = comp
    return found


def _inbound(layer: Any) -> list[str]:
    """The Keras layers feeding `layer` (its first call), in input order."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if not nodes:
        return []
    names = []
    tensors = getattr(nodes[0], "input_tensors", None)
    if tensors is None:
        tensors = []
    elif not isinstance(tensors, (list, tuple)):  # tf_keras: a single tensor as it is
        tensors = [tensors]
    for tensor in tensors:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:  # Keras 3 records the operation, tf_keras the layer
            source = getattr(history, "operation", None) or getattr(history, "layer", None)
            if source is not None:
                names.append(source.name)
    return names


def build_layer_map(onnx_model: onnx.ModelProto, keras_layers: list[Any],
                    model_name: str) -> LayerMap:
    names = {la.name for la in keras_layers}
    records = {la.name: LayerRecord(la.name, la.__class__.__name__, inputs=_inbound(la))
               for la in keras_layers}
    inits = {t.name for t in onnx_model.graph.initializer}
    generated: dict[str, list[str]] = {}
    for node in onnx_model.graph.node:
        owner = None
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in inits:
            owner = _scope_owner(node.input[1], names)
        for text in (node.name, *node.output):
            if owner is None:
                owner = _scope_owner(text, names)
        if owner is not None:
            if _GENERATED.search(node.name) and node.op_type not in WEIGHTED_OPS:
                generated.setdefault(owner, []).append(node.name)
            else:
                records[owner].nodes.append(node.name)
        if node.op_type in WEIGHTED_OPS:
            # A BatchNorm that tf2onnx folded into this node leaves its name on the node or
            # on the bias.
            hints = [_scope_owner(node.name, names)]
            hints += [_scope_owner(t, names) for t in node.input[2:] if t in inits]
            for other in hints:
                if other and other != owner:
                    records[other].folded_into = node.name
    # tf2onnx names the nodes it creates (layout Transposes, shape plumbing) after whatever
    # TF op they replaced, with a `__<n>` suffix: trust them only next to a real node.
    for owner, nodes in generated.items():
        if records[owner].nodes:
            records[owner].nodes.extend(nodes)
    for rec in records.values():
        if rec.nodes:
            rec.folded_into = None
    return LayerMap("keras", model_name, [records[la.name] for la in keras_layers])


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate every node whose inputs are all constants (the layout Transposes of weights
    that arrived as graph inputs), with onnx-graphsurgeon."""
    import onnx_graphsurgeon as gs

    saved = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # its size hints are not for users
    try:
        graph = gs.import_onnx(model)
        graph.fold_constants().cleanup()
        folded = gs.export_onnx(graph)
    finally:
        gs.logger.G_LOGGER.severity = saved
    folded.metadata_props.extend(model.metadata_props)
    folded.producer_name = model.producer_name
    return folded


def _constants_from_captures(onnx_model: onnx.ModelProto, function: Any, specs: list,
                             tf: Any) -> None:
    """Tensors a layer captured by value (Keras 3 Normalization's mean and variance) reach
    tf2onnx as extra graph inputs; turn them back into initializers with their values."""
    from onnx import numpy_helper

    captured = {}
    for external, internal in function.get_concrete_function(*specs).graph.captures:
        if external.dtype != tf.resource and hasattr(external, "numpy"):
            captured[internal.name] = external.numpy()
    keep = []
    for vi in onnx_model.graph.input:
        if vi.name in captured:
            onnx_model.graph.initializer.append(
                numpy_helper.from_array(captured[vi.name], vi.name))
        else:
            keep.append(vi)
    del onnx_model.graph.input[:]
    onnx_model.graph.input.extend(keep)


_UNSUPPORTED = re.compile(r"Tensorflow op \[(.+?): (\w+)\] is not supported")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _layer_of_tf_node(node_name: str, keras_layers: list[Any]) -> str:
    """'layer' (Class) for a TF node name, from its name scope, or the node name."""
    by_name = {la.name: la for la in keras_layers}
    owner = _scope_owner(node_name, set(by_name))
    if owner is None:
        return f"TF node {node_name!r}"
    return f"layer {owner!r} ({by_name[owner].__class__.__name__})"


_NESTED_CALL = (" (a nested, XLA-compiled function inside the layer, which tf2onnx leaves "
                "unconverted)")


def _run_tf2onnx(tf2onnx: Any, function: Any, specs: list, opset: int,
                 keras_layers: list[Any]) -> onnx.ModelProto:
    """tf2onnx with its log and C++ chatter captured: a model that cannot be converted is
    one QdqError naming the Keras layer, its class and the TF op, never a traceback."""
    collect = _Collect()
    tf_log = logging.getLogger("tf2onnx")
    saved = (tf_log.handlers[:], tf_log.propagate, tf_log.level)
    tf_log.handlers, tf_log.propagate = [collect], False
    tf_log.setLevel(logging.INFO)
    try:
        with captured_stderr():
            onnx_model, _ = tf2onnx.convert.from_function(
                function, input_signature=specs, opset=opset,
                custom_op_handlers=custom_op_handlers())
    except Exception as exc:  # tf2onnx raises many types
        raise QdqError(f"tf2onnx could not convert the model: {failure_cause(exc)}") from exc
    finally:
        tf_log.handlers, tf_log.propagate = saved[0], saved[1]
        tf_log.setLevel(saved[2])
    unsupported = [m.groups() for m in map(_UNSUPPORTED.search, collect.messages) if m]
    if unsupported:
        node, op = unsupported[0]
        more = f" (and {len(unsupported) - 1} more unsupported node(s))" \
            if len(unsupported) > 1 else ""
        why = _NESTED_CALL if op in ("StatefulPartitionedCall", "PartitionedCall") else ""
        raise QdqError(f"cannot convert {_layer_of_tf_node(node, keras_layers)}: it uses the "
                       f"TensorFlow op {op}, which tf2onnx {tf2onnx.__version__} cannot convert"
                       f"{why}{more}")
    return onnx_model


_TRACE_NOISE = re.compile(r"^(in user code:|File \"|\s*$|During handling|Traceback)")


def failure_cause(exc: BaseException) -> str:
    """The line of a TensorFlow/tf2onnx exception that says what went wrong: TF's traced
    errors open with "in user code:" and the stack, and end with the actual message."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines()]
    useful = [ln for ln in lines if ln and not _TRACE_NOISE.match(ln)
              and not ln.startswith(("return ", "raise ", "outputs = ", "x = "))]
    cause = useful[-1] if useful else (lines[0] if lines else "")
    cause = re.sub(rf"^{type(exc).__name__}: ", "", cause)  # TF repeats the type in the text
    return f"{type(exc).__name__}: {cause}"[:400] if cause else type(exc).__name__


def _checked(converted: Any, call: Any, specs: list, tf: Any, tf2onnx: Any) -> onnx.ModelProto:
    """`converted()`, checked against Keras on a random batch (keras_check); redone without
    tf2onnx's shape optimizers when it does not match, an error when that does not help."""
    onnx_model = converted()
    batch = reference_batch(specs)
    expected = keras_reference(call, batch, tf) if batch is not None else None
    if expected is None:
        return onnx_model
    problem = conversion_problem(onnx_model, batch, expected)
    if problem is None:
        return onnx_model
    with without_optimizers(tf2onnx, SHAPE_OPTIMIZERS):
        retry = converted()
    if conversion_problem(retry, batch, expected) is None:
        return retry
    raise QdqError(f"tf2onnx {tf2onnx.__version__} wrote a graph that does not compute what "
                   f"the Keras model does: {problem} (checked on a random batch of two; "
                   "converting again without its shape optimizers did not help)")


_OPSET_FOR = {"LayerNormalization": 17}  # the layer fuses into one op from this opset on


def choose_opset(keras_layers: list[Any]) -> int:
    """13 (per-channel Q/DQ), or the newer opset a layer class needs to stay one op."""
    classes = {la.__class__.__name__ for la in keras_layers}
    return max([13, *(v for k, v in _OPSET_FOR.items() if k in classes)])


def _saved_model_call(model: Any, tf: Any) -> tuple[Any, list[Any]]:
    """The serving signature of a loaded SavedModel as a positional call, and its specs."""
    fn = model.signatures.get("serving_default") or model.signatures.get("serve")
    if fn is None:
        raise QdqError("the SavedModel has no serving_default/serve signature")
    specs = [tf.TensorSpec(s.shape, s.dtype, name=name)
             for name, s in fn.structured_input_signature[1].items()]

    def call(*xs):
        return fn(**{s.name: x for s, x in zip(specs, xs)})

    return call, specs


def keras_to_onnx(model: Any, opset: int | None = None, input_shape: Any = None,
                  by_value: bool | None = None) -> onnx.ModelProto:
    """Convert an in-memory Keras model (any kind) or a loaded SavedModel to ONNX.

    `opset` None chooses 13, or 17 when the model has LayerNormalization layers (fused back
    into one LayerNormalization op). The result is prepared (BatchNorm folded where exact,
    shared weights un-shared) and carries the layer map in its metadata. The Keras model
    is not modified. `by_value` (default: when the weights exceed `BY_VALUE_BYTES`) traces
    with the weights captured by value, which keeps tf2onnx from freezing them.
    """
    tf, tf2onnx = _import_tf()
    if opset is None:
        opset = choose_opset(_flat_layers(model) if hasattr(model, "layers") else [])
    if not 13 <= opset <= 18:
        raise QdqError(f"opset {opset} is not supported for Keras conversion "
                       "(tf2onnx 1.17 writes opsets 13-18; per-channel Q/DQ needs >= 13)")
    if hasattr(model, "signatures") and not hasattr(model, "layers"):
        call, specs = _saved_model_call(model, tf)
        keras_layers: list[Any] = []
        model_name = "saved_model"
    else:
        structure = input_structure(model, input_shape, tf)
        specs = structure.specs
        model, _ = depthwise_for_grouped(model)

        def call(*xs):
            return model(structure.pack(xs), training=False)

        keras_layers = _flat_layers(model)
        model_name = getattr(model, "name", "model")
        if by_value is None:
            by_value = weight_bytes(model) > BY_VALUE_BYTES
    function = tf.function(call)

    def converted() -> onnx.ModelProto:
        with plain_grouped_convolutions():
            if by_value:
                with weights_by_value(model):
                    function.get_concrete_function(*specs)  # tf2onnx reuses this trace
            onnx_model = _run_tf2onnx(tf2onnx, function, specs, opset, keras_layers)
        _constants_from_captures(onnx_model, function, specs, tf)
        if by_value:
            onnx_model = fold_constants(onnx_model)
        outputs = function.get_concrete_function(*specs).structured_outputs
        count = len(onnx_model.graph.output)
        # One output keeps `output` (no loss or label needs its name); several are named
        # as Keras names them, so compile(loss={...}) and fit's label dicts take them.
        rename_outputs(onnx_model, keras_output_names(model, outputs)
                        if keras_layers and (count > 1 or isinstance(outputs, dict)) else None)
        return onnx_model

    onnx_model = _checked(converted, call, specs, tf, tf2onnx)
    onnx_model.producer_name = "qdq-onnx (tf2onnx)"
    if keras_layers:
        write_layer_map(onnx_model, build_layer_map(onnx_model, keras_layers, model_name))
    prepared, _ = prepare_model(onnx_model)
    return prepared
