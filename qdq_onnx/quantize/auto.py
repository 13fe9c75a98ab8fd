"""`auto` calibration: per scale key, the candidate threshold (max, percentile, entropy, mse)
that gives the best SQNR at the output of the layer that reads the tensor, measured on the
calibration data.

For each key, the reading layer (a weighted consumer when there is one) runs alone as a
one-node probe model. It is fed the float model's own inputs for that layer, with the key's
tensor(s) fake-quantized at each candidate, and its output is compared with the float one.
Weights stay float, so the measurement isolates this activation's quantization.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.quantize.config import CalibrationConfig
from qdq_onnx.quantize.histogram import TensorStats
from qdq_onnx.quantize.methods import FLOAT_METHODS, SINGLE_METHODS, amax_from_stats
from qdq_onnx.quantize.scales import amax_to_scale, quantize_dequantize
from qdq_onnx.types.scheme import Scheme

PROBE_SAMPLES = 128


def _reader(index: GraphIndex, tensors: list[str], weighted: frozenset[str]) -> onnx.NodeProto:
    """The node whose output measures the key: a weighted op reading it, else a node that
    reads all of the key's tensors (a Concat of a shared group), else the first reader."""
    readers = [u.node for t in tensors for u in index.consumers.get(t, ())]
    for node in readers:
        if node.op_type in weighted:
            return node
    for node in readers:
        if all(t in node.input for t in tensors):
            return node
    return readers[0]


def _probe(model: onnx.ModelProto, index: GraphIndex, node: onnx.NodeProto
           ) -> tuple[onnx.ModelProto, list[str]]:
    """A model of `node` alone: its live inputs as graph inputs, constants as initializers."""
    live = [t for t in dict.fromkeys(node.input) if t and not index.is_constant(t)]
    inits = [numpy_helper.from_array(index.constant_value(t), t)
             for t in dict.fromkeys(node.input) if t and index.is_constant(t)]
    float_type = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "probe", [helper.make_tensor_value_info(t, float_type, None) for t in live],
        [helper.make_tensor_value_info(node.output[0], float_type, None)], inits)
    probe = helper.make_model(graph, opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    return probe, live


def auto_amax(model: onnx.ModelProto, groups: dict[str, list[str]],
              stats: dict[str, TensorStats], data: Any, config: CalibrationConfig,
              schemes: dict[str, Scheme], probe_samples: int = PROBE_SAMPLES,
              weighted: frozenset[str] = frozenset()) -> tuple[dict[str, float], dict[str, str]]:
    """(amax per key, the method chosen per key), measured on up to `probe_samples`
    calibration samples (batches of `config.batch_size`), each key quantized in its
    scheme."""
    from qdq_onnx.data.feeds import as_batches
    from qdq_onnx.graph.sessions import inference_session, run_checked, with_outputs

    index = GraphIndex(model.graph)
    inputs = {i.name for i in model.graph.input}
    plans = {}
    for key, members in groups.items():
        tensors = list(dict.fromkeys(members))
        node = _reader(index, tensors, weighted)
        probe, live = _probe(model, index, node)
        candidates = {}
        scheme = schemes[key]
        methods = FLOAT_METHODS if scheme.is_float else SINGLE_METHODS
        for method in methods:  # dedupe equal thresholds, keep the first method
            value = max(amax_from_stats(stats[t], method, scheme, config.percentile)
                        for t in tensors)
            candidates.setdefault(value, method)
        plans[key] = (tensors, node, inference_session(probe), live, candidates)
    fetch = sorted({t for _, node, _, live, _ in plans.values()
                    for t in [*live, node.output[0]] if t not in inputs})
    session = inference_session(with_outputs(model, fetch))
    noise = {key: {a: 0.0 for a in plan[4]} for key, plan in plans.items()}
    signal = dict.fromkeys(plans, 0.0)
    batches, _ = as_batches(data, model, batch_size=config.batch_size, limit=probe_samples,
                            source="calibration data")
    for feed in batches:
        values = {**feed, **dict(zip(fetch, run_checked(session, fetch, feed)))}
        for key, (tensors, node, probe, live, candidates) in plans.items():
            reference = values[node.output[0]].astype(np.float64)
            signal[key] += float(np.sum(reference ** 2))
            scheme = schemes[key]
            for amax in candidates:
                scale, _ = amax_to_scale(np.float32(amax), scheme)
                args = {t: (quantize_dequantize(values[t], scale, scheme)[0] if t in tensors
                            else values[t]) for t in live}
                out = probe.run([node.output[0]], args)[0]
                noise[key][amax] += float(np.sum((out - reference) ** 2))
    amax, choice = {}, {}
    for key, (_, _, _, _, candidates) in plans.items():
        best = min(candidates, key=lambda a: (noise[key][a], a))  # ties: the smaller range
        amax[key], choice[key] = float(best), candidates[best]
    return amax, choice
