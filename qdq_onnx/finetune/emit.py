"""Emit: the trained weights and scales written back into the true Q/DQ model, refused
unless it computes what the training graph computes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.files.metadata import TRAINING_KEY, set_metadata
from qdq_onnx.finetune.fake_quant import TrainGraph
from qdq_onnx.finetune.lowering import restore_originals
from qdq_onnx.graph.batch import fixed_batch
from qdq_onnx.graph.sessions import inference_session
from qdq_onnx.quantize.scales import weight_scale


def emitted_model(qdq_model: onnx.ModelProto, graph: TrainGraph, params: dict[str, np.ndarray],
                  metadata: dict[str, Any]) -> onnx.ModelProto:
    """A copy of `qdq_model` with `params` (trained initializers) and the weight scales
    recomputed from them (per channel max|w| / qmax, as in training), plus `metadata`."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq_model)
    values = dict(params)
    for wq in graph.weights:  # reshaped below to the Q/DQ scale's own shape
        if wq.weight in values:  # a frozen weight (no loss reaches it) keeps its scale
            values[wq.scale] = weight_scale(values[wq.weight], wq.axis, wq.qmax)
    for t in out.graph.initializer:
        if t.name in values:
            v = np.asarray(values[t.name], dtype=np.float32).reshape(tuple(t.dims))
            t.CopyFrom(numpy_helper.from_array(v, t.name))
    set_metadata(out, TRAINING_KEY, json.dumps(metadata, sort_keys=True))
    return out


def fake_quant_model(graph: TrainGraph, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The training graph's forward pass with `params`, as a plain inference model, with
    the ops rewritten for training (lowering.py) back as they were."""
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    for t in model.graph.initializer:
        if t.name in params:
            t.CopyFrom(numpy_helper.from_array(params[t.name], t.name))
    model.graph.initializer.extend(graph.lowered_constants)
    restore_originals(model, graph.lowered)
    if graph.inputs:  # the loss's label inputs (and the nodes reading them) are not part of it
        keep = set(graph.inputs)
        extra = {i.name for i in model.graph.input if i.name not in keep}
        nodes = [n for n in model.graph.node if not extra & set(n.input)]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        inputs = [i for i in model.graph.input if i.name in keep]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    return model


def emitted_difference(emitted: onnx.ModelProto, reference: onnx.ModelProto,
                       outputs: list[str], feeds: dict[str, np.ndarray]) -> float:
    """Max |emitted - reference| over every one of `outputs` on `feeds`, both run op for op
    (no fusions, which can change the last bit); raises QdqError above 1e-6 relative to an
    output's magnitude."""
    batch = fixed_batch(emitted)  # the emitted file keeps the user's (fixed) input shape
    if batch:
        n = next(iter(feeds.values())).shape[0] // batch * batch
        if n == 0:
            raise QdqError(f"the check batch has fewer samples than the model's fixed batch "
                           f"size {batch}")
        feeds = {k: v[:n] for k, v in feeds.items()}
    total = next(iter(feeds.values())).shape[0]
    step = batch or total  # both run in the file's batches (a graph may hard-code it)
    chunks = [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, total, step)]
    reference_run = inference_session(reference, optimize=False)
    expected_parts = [reference_run.run(outputs, c) for c in chunks]
    run = inference_session(emitted, optimize=False)
    parts = [run.run(outputs, c) for c in chunks]
    worst = 0.0
    for j, name in enumerate(outputs):
        want = np.concatenate([p[j] for p in expected_parts])
        got = np.concatenate([p[j] for p in parts])
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
        tol = 1e-6 * max(1.0, float(np.max(np.abs(want)))) if want.size else 0.0
        if diff > tol:
            raise QdqError(f"the emitted Q/DQ model differs from the training graph by "
                           f"{diff:.3g} (> {tol:.3g}) on output {name!r} of the check batch; "
                           "not writing it")
        worst = max(worst, diff)
    return worst
