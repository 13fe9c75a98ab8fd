"""Calibration: run the float model on data and record each quantized activation's range.

One onnxruntime session exposes every tensor the plan quantizes, and batches stream through
it with running statistics, so memory does not grow with the number of samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .errors import QdqError
from .plan import PlacementPlan
from .progress import progress


def _session(model: onnx.ModelProto, outputs: list[str]):
    from .ort import inference_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in outputs:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return inference_session(probe.SerializeToString())


def collect_amax(model: onnx.ModelProto, plan: PlacementPlan, data: Any,
                 batch_size: int = 32, max_samples: int | None = None,
                 show_progress: bool = True) -> dict[str, float]:
    """Max |x| per scale key (scale group, else tensor) over the data ("max" calibration)."""
    from .data import as_batches

    groups = plan.activation_groups()
    if not groups:
        return {}
    inputs = {i.name for i in model.graph.input}
    tensors = sorted({p.tensor for g in groups.values() for p in g})
    fetch = [t for t in tensors if t not in inputs]
    session = _session(model, fetch)
    batch_iter, total = as_batches(data, model, batch_size=batch_size, limit=max_samples,
                                   source="calibration data")
    running: dict[str, float] = {t: 0.0 for t in tensors}
    seen = 0
    with progress(total=total, desc="calibrate", unit="sample", enable=show_progress) as bar:
        for feed in batch_iter:
            values = session.run(fetch, feed) if fetch else []
            current = dict(zip(fetch, values))
            for t in tensors:
                arr = current[t] if t in current else feed[t]
                m = float(np.max(np.abs(arr))) if arr.size else 0.0
                if not np.isfinite(m):
                    raise QdqError(f"calibration: tensor {t!r} produced NaN/Inf on the data")
                running[t] = max(running[t], m)
            n = next(iter(feed.values())).shape[0]
            seen += n
            bar.update(n)
    if seen == 0:
        raise QdqError("calibration data is empty")
    out: dict[str, float] = {}
    for key, members in groups.items():
        out[key] = max(running[p.tensor] for p in members)
    return out
