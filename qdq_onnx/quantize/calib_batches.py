"""How many samples one calibration run holds: `--calib-batch-size`, or fewer when the
tensors one run fetches would pass `--calib-batch-mib` (measured on one sample; the
statistics do not depend on the batch, only the memory does), and the sessions that fetch
them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx

from qdq_onnx.graph.batch import fixed_batch, relax_batch
from qdq_onnx.quantize.config import CalibrationConfig

log = logging.getLogger("qdq_onnx.calibration")


def session(model: onnx.ModelProto, outputs: list[str], reduce_max: bool = False):
    """A session that also returns `outputs`; with `reduce_max`, it returns max |x| of each
    instead (computed inside onnxruntime, so no activation is copied out)."""
    from qdq_onnx.graph.sessions import inference_session, with_outputs

    if not reduce_max:
        return inference_session(with_outputs(model, outputs)), list(outputs)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = []
    for i, name in enumerate(outputs):
        absolute, peak = f"qdq_onnx_calib_abs_{i}", f"qdq_onnx_calib_max_{i}"
        probe.graph.node.extend([
            onnx.helper.make_node("Abs", [name], [absolute], name=absolute),
            onnx.helper.make_node("ReduceMax", [absolute], [peak], name=peak, keepdims=0)])
        probe.graph.output.append(onnx.ValueInfoProto(name=peak))
        names.append(peak)
    return inference_session(probe), names


def rereadable(data: Any) -> bool:
    """Whether `data` can be iterated twice (paths, arrays, dicts, lists; not generators)."""
    if isinstance(data, (str, np.ndarray, dict, list, tuple)) or hasattr(data, "__fspath__"):
        return True
    return isinstance(data, Iterable) and not isinstance(data, Iterator) and \
        iter(data) is not data


def batch_size(model: onnx.ModelProto, tensors: list[str], data: Any,
                config: CalibrationConfig, relaxed: bool) -> int:
    """`config.batch_size`, or fewer samples when the activations of `tensors` one run
    fetches would pass `config.batch_mib` (measured on one sample of data that can be
    read again; the statistics do not depend on the batch, only the memory does: on a
    detector at 320x480, batches of 32 took 12 GB)."""
    from qdq_onnx.data.feeds import as_batches
    from qdq_onnx.graph.sessions import run_checked

    inputs = {i.name for i in model.graph.input}
    fetch = [t for t in tensors if t not in inputs]
    if config.batch_size == 1 or not fetch or not rereadable(data) or (
            fixed_batch(model) is not None and not relaxed):  # the graph fixes its batch
        return config.batch_size
    if surely_fits(model, len(fetch), config):
        return config.batch_size
    probe_session, names = session(relax_batch(model) if relaxed else model, fetch)
    probe, _ = as_batches(data, model, batch_size=1, limit=1, source="calibration data",
                          any_batch=relaxed)
    feed = next(iter(probe), None)
    if feed is None:
        return config.batch_size
    samples = max(1, int(next(iter(feed.values())).shape[0]))
    per_sample = sum(np.asarray(a).nbytes for a in run_checked(probe_session, names, feed)) \
        // samples
    fits = max(1, int(config.batch_mib * 2 ** 20 // max(per_sample, 1)))
    if fits >= config.batch_size:
        return config.batch_size
    log.info("calibration: batches of %d sample(s): one sample's activations are %.0f MiB, "
             "a batch's are kept under %d MiB (--calib-batch-mib)", fits,
             per_sample / 2 ** 20, config.batch_mib)
    return fits


# A layer's output is at most this many times its model's input, per sample, for the
# models that skip the probe (surely_fits) (a 3-channel image to 64 channels at full resolution
# is 21x); larger expansions at high resolution pass the bound and are measured.
_EXPANSION = 64


def surely_fits(model: onnx.ModelProto, tensors: int, config: CalibrationConfig) -> bool:
    """Whether a batch of `tensors` fetched tensors stays under `config.batch_mib` even if
    each were _EXPANSION times the input of a sample (input shapes known but the batch):
    a small model then needs no probe, which costs a session build (on the MNIST CNN, a
    fifth of max calibration's time)."""
    inits = {t.name for t in model.graph.initializer}
    per_sample = 0
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim[1:]]
        if not t.HasField("shape") or not all(d > 0 for d in dims):
            return False
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        per_sample += int(np.prod(dims)) * itemsize
    return per_sample * tensors * config.batch_size * _EXPANSION <= config.batch_mib * 2 ** 20
