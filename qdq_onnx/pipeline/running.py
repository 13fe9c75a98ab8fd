"""Running a model on data through the pipeline's input matching (what `predict` of an
uncompiled QuantizedModel does)."""

from __future__ import annotations

from typing import Any


def run_model(model: Any, x: Any) -> Any:
    """The output of `model` (a list in output order for several) run in onnxruntime on `x`
    (an array, a dict by input name, or a list/tuple in input order), inputs matched and
    checked as every data-taking command does."""
    from qdq_onnx.data.feeds import as_named, match_inputs
    from qdq_onnx.graph.sessions import inference_session, run_checked

    feeds = match_inputs(as_named(x), model)
    outs = run_checked(inference_session(model), None, feeds)
    return outs[0] if len(outs) == 1 else outs
