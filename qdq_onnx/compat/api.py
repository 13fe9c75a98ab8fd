"""The Python API of the original toolkit, on ONNX: quantize_model() -> QuantizedModel,
built on the pipeline (the only part of the package it uses)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from qdq_onnx import pipeline
from qdq_onnx.errors import QdqError
from qdq_onnx.pipeline import plumbing


class QuantizedModel:
    """A Q/DQ model with its placement plan that trains like a Keras model.

    `compile()` then `fit()` fine-tune the fake-quant lowering of the Q/DQ graph in
    onnxruntime-training; `evaluate()`/`predict()` run the training graph's eval mode;
    `save()` writes the TensorRT Q/DQ ONNX (trained weights and scales once fitted).
    """

    def __init__(self, float_model: onnx.ModelProto, plan: plumbing.PlacementPlan,
                 qdq_model: onnx.ModelProto, report: plumbing.InsertReport,
                 notes: list[str]) -> None:
        self.float_model = float_model
        self.plan = plan
        self.onnx = qdq_model
        self.report = report
        self.notes = notes
        self._range_data: Any = None  # the calibration data, read again by the range guard
        self._training: plumbing.Training | None = None
        self._work_dir: str | os.PathLike | None = None

    # -- Keras-like training ---------------------------------------------------------------
    def compile(self, optimizer: str | None = None, loss: str | None = None,
                metrics: Sequence[str] | str | None = None,
                work_dir: str | os.PathLike | None = None, **settings: Any) -> QuantizedModel:
        """Configure fine-tuning. `optimizer`, `loss`, `metrics` and the other keyword
        settings are those of `pipeline.TrainConfig` (learning_rate, from_logits,
        weight_decay, schedule, warmup_steps, step_size, gamma, learn_scales, seed, device,
        backend); what is not given keeps TrainConfig's measured defaults (Adam, 1e-5 with
        cosine decay)."""
        config = plumbing.make_config(
            pipeline.TrainConfig, {"optimizer": optimizer, "loss": loss, "metrics": metrics,
                                   **settings}, "compile()")
        self._close()
        self._training = plumbing.Training(self.onnx, config, work_dir,
                                           teacher=self.float_model)
        self._work_dir = work_dir
        return self

    def _distilling(self, distill: bool) -> None:
        """Rebuild the (untrained) session for distillation, or refuse mid-training."""
        current = self._training
        if current is not None and current.config.distill == distill:
            return
        if current is not None and current.steps:
            raise QdqError("fit(distill=...) changes the loss of a model already trained; "
                           "compile(distill=...) before the first fit instead")
        base = current.config if current is not None else pipeline.TrainConfig()
        settings = {k: getattr(base, k) for k in plumbing.setting_names(pipeline.TrainConfig)}
        self.compile(work_dir=self._work_dir,
                     **{**settings, "distill": distill})

    def _session(self) -> plumbing.Training:
        if self._training is None:
            raise QdqError("call compile() before fit(), evaluate() or predict()")
        return self._training

    def fit(self, x: Any, y: Any = None, batch_size: int | None = None,
            epochs: int | None = None, *, validation_data: Any = None,
            callbacks: Sequence[plumbing.Callback] = (), distill: bool | None = None,
            **settings: Any):
        """Train; returns a Keras-like History (`history.history["loss"]`). The keyword
        settings are those of `pipeline.FitConfig`: validation_split, shuffle,
        checkpoint_dir, resume, checkpoint_every_steps, checkpoint_every_minutes,
        keep_checkpoints, early_stopping_patience, keep_best, verbose, steps_per_epoch.

        With validation data and keep_best, the starting weights are scored first and the
        best by validation accuracy (else loss), the start included, are kept. With
        checkpoint_dir, checkpoints are written atomically (every 10 minutes by default,
        at epoch ends and at an interruption) and `resume=True` continues from the newest
        one exactly. Ctrl-C stops at the next step boundary (`history.stopped`). As in
        Keras, `x` may be a `tf.data.Dataset`, `PyDataset`, generator or list of (x, y)
        batches with `y` None (and `validation_data` likewise).

        `distill=True` needs no labels: the float model's outputs are the targets (MSE, or
        `compile(distill_loss="kl", temperature=T)`), for any number of outputs. Several
        outputs with labels: `y` a dict by output name or a list in output order, with
        `compile(loss={...}, loss_weights={...})`."""
        if distill is not None:
            self._distilling(distill)
        fit = plumbing.make_config(pipeline.FitConfig, {"batch_size": batch_size,
                                                        "epochs": epochs, **settings}, "fit()")
        extra = [plumbing.EpochPrinter()] if fit.verbose else []
        return self._session().fit(x, y, fit, validation_data, [*callbacks, *extra])

    def evaluate(self, x: Any, y: Any = None, batch_size: int = 256) -> list[float]:
        """[loss, accuracy] (accuracy omitted for MSE; one per output of several), like
        Keras; `y` None when distilling."""
        logs = self._session().evaluate(x, y, batch_size)
        return [logs["loss"], *(v for k, v in logs.items() if k.endswith("accuracy"))]

    def predict(self, x: Any, batch_size: int = 256):
        """Model outputs: the training graph's eval mode once compiled, else the Q/DQ graph."""
        if self._training is None:
            return plumbing.run_model(self.onnx, x)
        return self._training.predict(x, batch_size)

    # -- output ------------------------------------------------------------------------------
    def export(self, high_precision: str | None = None, keep_io_types: bool = True,
               range_guard: bool = True) -> onnx.ModelProto:
        """The TensorRT Q/DQ model: trained weights and scales once fitted, checked against
        the training graph's eval output on a sample batch, with the float remainder in
        `high_precision` (fp16, bf16, fp32; None: the rule file's default, fp16); the range
        guard reads the calibration data. `keep_io_types`: graph I/O stays FP32."""
        precision = pipeline.PrecisionConfig(high_precision, keep_io_types, range_guard)
        return pipeline.type_remainder(self.export_fp32(), precision,
                                       data=self._range_data).model

    def export_fp32(self) -> onnx.ModelProto:
        """The Q/DQ model with its float remainder FP32 (the working form)."""
        if self._training is None or self._training.steps == 0:
            return self.onnx
        return self._training.emit({"rules": self.plan.rules, "spec": self.plan.spec,
                                    "cases": self.plan.cases})

    def save(self, path: str | os.PathLike, high_precision: str | None = None,
             keep_io_types: bool = True, range_guard: bool = True) -> Path:
        """Write the TensorRT Q/DQ ONNX file atomically (full ONNX checker first), its
        float remainder typed as `export` says (FP16 by default)."""
        plumbing.check_output(path)
        precision = pipeline.PrecisionConfig(high_precision, keep_io_types, range_guard)
        pipeline.write(self.export_fp32(), path, precision, data=self._range_data,
                       check="the quantized model")
        return Path(path)

    def summary(self) -> str:
        """One line: activation Q/DQ pairs, quantized inputs, weights, inputs left float."""
        c = self.plan.counts()
        return (f"{c['activation_qdq_pairs']} activation Q/DQ pairs on {c['activation_inputs']} "
                f"inputs, {c['weights']} weights, {c['left_float']} inputs left float by rule")

    def __repr__(self) -> str:
        return f"QuantizedModel({self.summary()})"

    def _close(self) -> None:
        if self._training is not None:
            self._training.close()
            self._training = None

    def __del__(self) -> None:
        if getattr(self, "_training", None) is not None:
            self._close()


def _as_onnx(model: Any, opset: int | None) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        return pipeline.load(model).model
    if isinstance(model, (str, Path)) or hasattr(model, "layers") \
            or hasattr(model, "signatures"):
        return pipeline.convert(model, opset=opset)
    raise QdqError(f"quantize_model takes a Keras model, an onnx.ModelProto or a path, not "
                   f"{type(model).__name__}")


def _weight_scheme(weight_bits: int | None, weight_scheme: str | None) -> str | None:
    if weight_bits is None:
        return weight_scheme
    if weight_scheme is not None:
        raise QdqError("give weight_scheme or the older weight_bits, not both")
    warnings.warn("quantize_model(weight_bits=N) is deprecated: use weight_scheme='int8-Nbit'",
                  DeprecationWarning, stacklevel=3)
    return plumbing.weight_bits_scheme(weight_bits)


def quantize_model(model: Any, quantization_mode: str = "full",
                   quantization_spec: plumbing.QuantizationSpec | None = None,
                   custom_qdq_cases: Sequence[plumbing.CustomQDQInsertionCase | str] | None = None,
                   rules: plumbing.RuleSet | str | None = None, calibration_data: Any = None,
                   calibration_method: str | None = None,
                   calibration_percentile: float = 99.99,
                   calibration_batch_size: int = 32, opset: int | None = None,
                   force: bool = False, weight_scheme: str | None = None,
                   keep_layout: bool = False, weight_bits: int | None = None,
                   dtype: str | None = None, accuracy_guard: bool = False,
                   refine_scales: str = "off") -> QuantizedModel:
    """Insert Q/DQ following TensorRT's placement policy (or the given rules).

    `model` is a Keras model, an `onnx.ModelProto` or a path (.onnx, .keras, .h5, SavedModel);
    it is never modified, nor is `quantization_spec`. Modes: "full" (every supported layer,
    spec/cases adjust) and "partial" (only what the spec/cases name). With
    `calibration_data` the activation scales are calibrated (`calibration_method`; None:
    mse for INT8, max for FP8), otherwise they are placeholders; `accuracy_guard` then
    also moves the layers that break agreement with the float model to the float
    remainder, and `refine_scales` ("auto", "on", "off") tunes the INT8 ranges on the
    model's outputs (both off by default here: fine-tuning wins the accuracy back; on in
    `qdq-onnx insert`). `weight_scheme` puts every weight in another precision
    scheme than its rule's ("int8-4bit": a 4-bit range in int8 Q/DQ, an experiment;
    `weight_bits=4`, the older form, still works). Layout Transposes a converter left
    around weighted ops are moved to the graph's edges unless `keep_layout`. `dtype` "fp8"
    quantizes every pair to FP8 E4M3 instead of the rules' INT8 (calibration max or
    percentile)."""
    placement = pipeline.PlacementConfig(
        rules=rules, mode=quantization_mode, spec=quantization_spec,
        cases=tuple(custom_qdq_cases or ()), force=force, keep_layout=keep_layout,
        weight_scheme=_weight_scheme(weight_bits, weight_scheme), scheme=dtype)
    calibration = pipeline.CalibrationConfig(method=calibration_method,
                                             percentile=calibration_percentile,
                                             batch_size=calibration_batch_size,
                                             refine_scales=refine_scales)
    q = pipeline.insert(_as_onnx(model, opset), placement, calibration, data=calibration_data,
                        guard=pipeline.AccuracyGuardConfig(enabled=accuracy_guard))
    out = QuantizedModel(q.float_model, q.plan, q.qdq, q.report, q.notes)
    out._range_data = calibration_data
    return out


def calibrate(model: Any, data: Any, method: str | None = None, percentile: float = 99.99,
              batch_size: int = 32, max_samples: int | None = None,
              show_progress: bool = True) -> onnx.ModelProto:
    """Set the activation scales of a Q/DQ model from data; returns a new model.

    `model` is a Q/DQ `onnx.ModelProto`, a path to one, or a QuantizedModel. Statistics are
    collected on the float graph behind it (Q/DQ bypassed). Weight scales are unchanged.
    """
    if isinstance(model, QuantizedModel):
        model = model.onnx
    elif isinstance(model, (str, Path)):
        model = pipeline.load(model).model
    out, _ = pipeline.calibrate(model, data, pipeline.CalibrationConfig(
        method=method, percentile=percentile, batch_size=batch_size, max_samples=max_samples,
        show_progress=show_progress))
    return out
