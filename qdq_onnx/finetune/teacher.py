"""The float model's outputs as distillation targets: computed once over the training data,
in batches, into memory-mapped files (RAM stays bounded by one batch, and shuffled steps
read their rows from the page cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from qdq_onnx.graph.batch import relax_batch
from qdq_onnx.graph.sessions import inference_session, run_checked
from qdq_onnx.progress import progress


def teacher_outputs(teacher: onnx.ModelProto, feeds: dict[str, np.ndarray], folder: str,
                    outputs: list[str], batch_size: int = 256, show_progress: bool = False,
                    desc: str = "teacher", hard_batch: int | None = None
                    ) -> dict[str, np.ndarray]:
    """The teacher's `outputs` on every row of `feeds`, as read-only memory-mapped arrays
    in `folder`; in batches of `hard_batch` when its graph hard-codes that batch size."""
    n = next(iter(feeds.values())).shape[0]
    session = inference_session(teacher if hard_batch else relax_batch(teacher))
    batch_size = hard_batch or batch_size
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

