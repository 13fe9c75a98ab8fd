"""Checking a Keras conversion against Keras itself, on one random batch of two.

tf2onnx can write a graph that is valid ONNX but wrong. The known instance: on KerasHub's
MiTBackbone (SegFormer's encoder, an attention with one head and spatial reduction) its
`reshape_optimizer` rewrites a Reshape's target from the symbolic shape of the wrong tensor,
so K becomes (batch*64, 1, 1, 16) instead of (batch, 1, 64, 16) and onnxruntime fails in the
first MatMul ("left operand cannot broadcast on dim 0"), at any batch size. Converting again
without that optimizer gives the right graph. So a conversion is run once in onnxruntime
and compared with the Keras model; on a mismatch it is redone without the optimizers that
rewrite shapes, and a graph that is still wrong is an error naming the output, not a file
that fails later in calibration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

# tf2onnx optimizers that rewrite shapes from symbolic shape inference (the retry drops them)
SHAPE_OPTIMIZERS = ("reshape_optimizer",)
_SPATIAL, _SEQUENCE = 32, 8  # sizes for dimensions the model leaves open


def _sample(spec: Any, rng: np.random.Generator) -> np.ndarray | None:
    dims = list(spec.shape)[1:]
    rank = len(dims) + 1
    open_size = _SEQUENCE if rank <= 3 else _SPATIAL
    shape = (2, *(d if d is not None else open_size for d in dims))
    dtype = spec.dtype.as_numpy_dtype
    if np.issubdtype(dtype, np.integer):
        return np.ones(shape, dtype)  # a valid id for any vocabulary, a "keep" mask
    if np.issubdtype(dtype, np.bool_):
        return np.ones(shape, bool)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    return None


def reference_batch(specs: list[Any]) -> list[np.ndarray] | None:
    """One random batch of two for the model's inputs, or None when an input's dtype has no
    obvious sample (strings)."""
    rng = np.random.default_rng(0)
    batch = [_sample(s, rng) for s in specs]
    return None if any(b is None for b in batch) else batch


def keras_reference(call: Any, batch: list[np.ndarray], tf: Any) -> list[np.ndarray] | None:
    """The Keras model's outputs on `batch`, flat in tf.nest order (tf2onnx's output order),
    or None when the model cannot run on it (a shape the open dimensions do not allow)."""
    try:
        out = call(*[tf.constant(b) for b in batch])
    except Exception:  # noqa: BLE001 - then there is nothing to compare with
        return None
    return [np.asarray(t) for t in tf.nest.flatten(out)]


def conversion_problem(model: onnx.ModelProto, batch: list[np.ndarray],
                       expected: list[np.ndarray]) -> str | None:
    """What is wrong with the converted `model` on `batch` (None: it matches Keras). Needs
    onnxruntime; without it nothing can be checked and None comes back."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from qdq_onnx.errors import QdqError
    from qdq_onnx.graph.sessions import inference_session, run_checked
    from qdq_onnx.progress import captured_stderr

    feeds = {i.name: b for i, b in zip(model.graph.input, batch)}
    try:
        with captured_stderr():  # onnxruntime logs the failing node before raising
            got = run_checked(inference_session(model), None, feeds)
    except QdqError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a session that cannot even be made
        return f"onnxruntime cannot load it: {str(exc).strip().splitlines()[0][:300]}"
    for out, g, e in zip(model.graph.output, got, expected):
        if g.shape != e.shape:
            return f"output {out.name!r} has shape {g.shape}, Keras gives {e.shape}"
        e64 = e.astype(np.float64)
        finite = np.isfinite(e64)
        if not finite.any():
            continue
        diff = float(np.max(np.abs(g.astype(np.float64)[finite] - e64[finite])))
        tolerance = 1e-4 + 1e-3 * float(np.max(np.abs(e64[finite])))
        if diff > tolerance:
            return f"output {out.name!r} differs from Keras by up to {diff:.3g}"
    return None


@contextlib.contextmanager
def without_optimizers(tf2onnx: Any, names: tuple[str, ...]) -> Iterator[None]:
    """tf2onnx with some of its graph optimizers switched off (it reads the module's table
    on every conversion and offers no argument for it in `from_function`)."""
    table = tf2onnx.optimizer._optimizers
    tf2onnx.optimizer._optimizers = type(table)(
        (k, v) for k, v in table.items() if k not in names)
    try:
        yield
    finally:
        tf2onnx.optimizer._optimizers = table
