"""What the two front ends (the CLI, the Keras-style API in `compat/`) need besides the
pipeline's verbs: file checks, settings reflection, ranks and the launcher, engine probes,
chart writers. Not the user's API (that is `qdq_onnx.pipeline`); kept in one place so the
front ends still import nothing of the stages behind the façade (tested). It sits in
`pipeline/` rather than `cli/` because `compat/` is below `cli/` in the layer order and uses
it too."""

from __future__ import annotations

from qdq_onnx.lazy import lazy_names

_WHERE = {
    "write_text_atomic": "qdq_onnx.files.atomic",
    "ModelFile": "qdq_onnx.files.onnx_files", "check_output": "qdq_onnx.files.onnx_files",
    **dict.fromkeys(["BACKENDS", "require_backend", "backend_description"],
                    "qdq_onnx.finetune.backend"),
    **dict.fromkeys(["Callback", "EpochPrinter"], "qdq_onnx.finetune.callbacks"),
    **dict.fromkeys(["default_of", "make_config", "setting_names"], "qdq_onnx.pipeline.config"),
    "weight_bits_scheme": "qdq_onnx.pipeline.deprecated",
    **dict.fromkeys(["describe", "render_error_report", "error_report_chart",
                     "sensitivity_chart", "sensitivity_spec", "read_sensitivity", "write_png"],
                    "qdq_onnx.pipeline.diagnostics"),
    "Training": "qdq_onnx.pipeline.training", "run_model": "qdq_onnx.pipeline.running",
    "METHODS": "qdq_onnx.quantize.config", "REFINE_MODES": "qdq_onnx.quantize.config",
    "HIGH_PRECISIONS": "qdq_onnx.types.float_type",
    "InsertReport": "qdq_onnx.quantize.insert",
    "quantized_macs_share": "qdq_onnx.graph.macs", "data_shapes": "qdq_onnx.graph.macs",
    "CustomQDQInsertionCase": "qdq_onnx.placement.cases",
    "PlacementPlan": "qdq_onnx.placement.plan", "RuleSet": "qdq_onnx.placement.rules",
    "QuantizationSpec": "qdq_onnx.placement.spec",
    **dict.fromkeys(["SCHEMES", "scheme_named"], "qdq_onnx.types.scheme"),
    **dict.fromkeys(["world", "launched_by_mpi"], "qdq_onnx.parallel.world"),
    **dict.fromkeys(["launch", "record_rank", "finish_rank"], "qdq_onnx.parallel.launch"),
    "ParallelConfig": "qdq_onnx.parallel.config",
    "SensitivityConfig": "qdq_onnx.diagnostics.config",
    "ReportConfig": "qdq_onnx.diagnostics.config",
    "REPORT_SAMPLES": "qdq_onnx.diagnostics.config",
    "runtime_failure": "qdq_onnx.graph.sessions",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
