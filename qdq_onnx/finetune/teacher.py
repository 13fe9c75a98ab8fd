"""The float model's outputs as distillation targets: computed once over the training data,
in batches, into memory-mapped files (RAM stays bounded by one batch, and shuffled steps
read their rows from the page cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from qdq_onnx.graph.batch import fixed_batch, relax_batch
from qdq_onnx.graph.sessions import inference_session, run_checked
from qdq_onnx.progress import progress


def teacher_outputs(teacher: onnx.ModelProto, feeds: dict[str, np.ndarray], folder: str,
                    outputs: list[str], batch_size: int = 256, show_progress: bool = False,
                    desc: str = "teacher") -> dict[str, np.ndarray]:
    """The teacher's `outputs` on every row of `feeds`, as read-only memory-mapped arrays
    in `folder`."""
    n = next(iter(feeds.values())).shape[0]
    fixed = hard_coded_batch(teacher, feeds)
    session = inference_session(teacher if fixed else relax_batch(teacher))
    batch_size = fixed or batch_size
    inputs = [i.name for i in session.get_inputs()]
    maps: dict[str, np.ndarray] = {}
    with progress(total=n, desc=desc, unit="sample", enable=show_progress) as bar:
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            values = run_checked(session, outputs, {k: np.asarray(feeds[k][rows])
                                                    for k in inputs})
            for name, value in zip(outputs, values):
                if name not in maps:
                    path = Path(folder) / f"teacher_{len(maps)}.npy"
                    maps[name] = np.lib.format.open_memmap(
                        path, mode="w+", dtype=np.float32, shape=(n, *value.shape[1:]))
                maps[name][rows] = value
            bar.update(rows.stop - rows.start)
    for m in maps.values():
        m.flush()
    return {name: np.load(Path(folder) / f"teacher_{i}.npy", mmap_mode="r", allow_pickle=False)
            for i, name in enumerate(maps)}


def hard_coded_batch(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> int | None:
    """The model's fixed batch size when its graph hard-codes it (a Reshape to [1, -1, 85]:
    with the batch relaxed, two samples come out as one), else None; judged by running two
    batches' worth of `feeds` (None with fewer rows)."""
    batch = fixed_batch(model)
    n = next(iter(feeds.values())).shape[0]
    if batch is None or n < 2 * batch:
        return None
    session = inference_session(relax_batch(model))
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, {i.name: np.asarray(feeds[i.name][:2 * batch])
                                     for i in session.get_inputs()})
    except Exception:  # noqa: BLE001 - onnxruntime's own types: it does not run relaxed
        return batch
    return batch if any(v.ndim == 0 or v.shape[0] != 2 * batch for v in values) else None

