"""Running a model on data through the pipeline's input matching (what `predict` of an
uncompiled QuantizedModel does)."""

from __future__ import annotations

from typing import Any


def run_model(model: Any, x: Any) -> Any:
    """The first output of `model` run in onnxruntime on `x` (an array, or a dict by input
    name), inputs matched and checked as every data-taking command does."""
    from qdq_onnx.data.feeds import match_inputs
    from qdq_onnx.graph.sessions import inference_session

    feeds = match_inputs({"": x} if not isinstance(x, dict) else dict(x), model)
    return inference_session(model).run(None, feeds)[0]
