"""The Python API of the original toolkit, on ONNX: quantize_model() -> QuantizedModel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from qdq_onnx.convert.prepare import prepare_model, require_float_model
from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import load_model, save_model_atomic
from qdq_onnx.placement.cases import CustomQDQInsertionCase
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.planner import plan_placement
from qdq_onnx.placement.rules import RuleSet, load_rules
from qdq_onnx.placement.spec import QuantizationSpec
from qdq_onnx.quantize.insert import InsertReport, insert_qdq


class QuantizedModel:
    """A Q/DQ model with its placement plan that trains like a Keras model.

    `compile()` then `fit()` fine-tune the fake-quant lowering of the Q/DQ graph in
    onnxruntime-training; `evaluate()`/`predict()` run the training graph's eval mode;
    `save()` writes the TensorRT Q/DQ ONNX (trained weights and scales once fitted).
    """

    def __init__(self, float_model: onnx.ModelProto, plan: PlacementPlan,
                 qdq_model: onnx.ModelProto, report: InsertReport, notes: list[str],
                 weight_bits: int = 8) -> None:
        self.float_model = float_model
        self.plan = plan
        self.onnx = qdq_model
        self.report = report
        self.notes = notes
        self.weight_bits = weight_bits
        self._trainer = None
        self._config = None

    # -- Keras-like training ---------------------------------------------------------------
    def compile(self, optimizer: str = "adam", loss: str = "sparse_categorical_crossentropy",
                metrics: Sequence[str] = ("accuracy",), learning_rate: float = 1e-3,
                from_logits: bool = True, weight_decay: float = 0.01,
                schedule: str = "constant", warmup_steps: int = 0, step_size: int = 1,
                gamma: float = 0.1, learn_scales: bool = False, seed: int = 0,
                device: str = "cpu", work_dir: str | os.PathLike | None = None
                ) -> QuantizedModel:
        """Configure fine-tuning. Optimizers: adam, adamw, sgd. Losses:
        sparse_categorical_crossentropy, categorical_crossentropy, binary_crossentropy, mse
        (from logits, or from probabilities with from_logits=False). Schedules: constant,
        cosine, step (x gamma every step_size epochs), each with optional linear warm-up.
        learn_scales trains activation scales (LSQ gradient); otherwise they stay as
        calibrated. Weight scales always follow the weights."""
        from qdq_onnx.finetune import TrainConfig, Trainer

        if isinstance(metrics, str):
            metrics = (metrics,)
        config = TrainConfig(optimizer=str(optimizer).lower(), learning_rate=learning_rate,
                             loss=loss, from_logits=from_logits, metrics=tuple(metrics or ()),
                             weight_decay=weight_decay, schedule=schedule,
                             warmup_steps=warmup_steps, step_size=step_size, gamma=gamma,
                             learn_scales=learn_scales, weight_bits=self.weight_bits,
                             seed=seed, device=device)
        if self._trainer is not None:
            self._trainer.close()
        self._trainer = Trainer(self.onnx, config, work_dir)
        self._config = config
        return self

    def _need_trainer(self):
        if self._trainer is None:
            raise QdqError("call compile() before fit(), evaluate() or predict()")
        return self._trainer

    def fit(self, x: Any, y: Any, batch_size: int = 32, epochs: int = 1,
            validation_split: float = 0.0, validation_data: tuple | None = None,
            shuffle: bool = True, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, early_stopping_patience: int | None = None,
            verbose: int = 1):
        """Train for `epochs`; returns a Keras-like History (`history.history["loss"]`).

        With `checkpoint_dir`, a checkpoint (weights, optimizer state, loop position) is
        written atomically after every epoch and at an interruption; `resume=True`
        continues from it. Ctrl-C stops at the next step boundary (`history.stopped`)."""
        from qdq_onnx.progress import epoch_printer

        trainer = self._need_trainer()
        history = trainer.fit(x, y, batch_size=batch_size, epochs=epochs,
                              validation_split=validation_split,
                              validation_data=validation_data, shuffle=shuffle,
                              checkpoint_dir=checkpoint_dir, resume=resume,
                              early_stopping_patience=early_stopping_patience,
                              verbose=verbose,
                              on_epoch_end=epoch_printer() if verbose else None)
        self._sample = x
        return history

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> list[float]:
        """[loss, accuracy] (accuracy omitted for MSE), like Keras."""
        logs = self._need_trainer().evaluate(x, y, batch_size)
        return [logs[k] for k in ("loss", "accuracy") if k in logs]

    def predict(self, x: Any, batch_size: int = 256):
        if self._trainer is None:  # not compiled: run the Q/DQ graph itself
            from qdq_onnx.data.feeds import match_inputs
            from qdq_onnx.graph.sessions import inference_session

            feeds = match_inputs({"": x} if not isinstance(x, dict) else dict(x), self.onnx)
            return inference_session(self.onnx).run(None, feeds)[0]
        return self._trainer.predict(x, batch_size)

    # -- output ------------------------------------------------------------------------------
    def export(self) -> onnx.ModelProto:
        """The TensorRT Q/DQ model: trained weights and scales once fitted, checked against
        the training graph's eval output on a sample batch."""
        if self._trainer is None or self._trainer.step == 0:
            return self.onnx
        sample = getattr(self, "_sample", None)
        if sample is not None:
            sample = {k: v[:64] for k, v in sample.items()} if isinstance(sample, dict) \
                else sample[:64]
        return self._trainer.emit(sample, provenance={"rules": self.plan.rules,
                                                      "spec": self.plan.spec,
                                                      "cases": self.plan.cases})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the TensorRT Q/DQ ONNX file atomically (full ONNX checker first)."""
        return save_model_atomic(self.export(), path, check="the quantized model")

    def summary(self) -> str:
        c = self.plan.counts()
        return (f"{c['activation_qdq_pairs']} activation Q/DQ pairs on {c['activation_inputs']} "
                f"inputs, {c['weights']} weights, {c['left_float']} inputs left float by rule")

    def __repr__(self) -> str:
        return f"QuantizedModel({self.summary()})"

    def __del__(self) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            trainer.close()


def _as_onnx(model: Any, opset: int) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        if p.suffix == ".onnx":
            return load_model(p)
        from qdq_onnx.convert.keras_model import keras_to_onnx, load_keras_model

        return keras_to_onnx(load_keras_model(p), opset=opset)
    if hasattr(model, "layers") or hasattr(model, "signatures"):
        from qdq_onnx.convert.keras_model import keras_to_onnx

        return keras_to_onnx(model, opset=opset)
    raise QdqError(f"quantize_model takes a Keras model, an onnx.ModelProto or a path, not "
                   f"{type(model).__name__}")


def quantize_model(model: Any, quantization_mode: str = "full",
                   quantization_spec: QuantizationSpec | None = None,
                   custom_qdq_cases: Sequence[CustomQDQInsertionCase | str] | None = None,
                   rules: RuleSet | str | None = None, calibration_data: Any = None,
                   calibration_method: str = "max", calibration_percentile: float = 99.99,
                   calibration_batch_size: int = 32, opset: int = 13,
                   force: bool = False, weight_bits: int = 8) -> QuantizedModel:
    """Insert Q/DQ following TensorRT's placement policy (or the given rules).

    `model` is a Keras model, an `onnx.ModelProto` or a path (.onnx, .keras, .h5, SavedModel);
    it is never modified, nor is `quantization_spec`. Modes: "full" (every supported layer,
    spec/cases adjust) and "partial" (only what the spec/cases name). With
    `calibration_data` the activation scales are calibrated (max), otherwise placeholders.
    """
    source = _as_onnx(model, opset)
    require_float_model(source, force=force)
    rule_set = rules if isinstance(rules, RuleSet) else load_rules(rules)
    prepared, notes = prepare_model(source)
    plan = plan_placement(prepared, rule_set, quantization_mode, quantization_spec,
                          custom_qdq_cases)
    amax = None
    scale_source = ""
    if calibration_data is not None:
        from qdq_onnx.quantize.calibration import collect_amax

        amax = collect_amax(prepared, plan, calibration_data,
                            batch_size=calibration_batch_size, method=calibration_method,
                            percentile=calibration_percentile)
        scale_source = f"calibrated:{calibration_method}"
    if not 2 <= weight_bits <= 8:
        raise QdqError(f"weight_bits must be 2-8, got {weight_bits}")
    qdq, report = insert_qdq(prepared, plan, amax, scale_source, weight_bits=weight_bits)
    return QuantizedModel(prepared, plan, qdq, report, notes + plan.notes, weight_bits)


def calibrate(model: Any, data: Any, method: str = "max", percentile: float = 99.99,
              batch_size: int = 32, max_samples: int | None = None,
              show_progress: bool = True) -> onnx.ModelProto:
    """Set the activation scales of a Q/DQ model from data; returns a new model.

    `model` is a Q/DQ `onnx.ModelProto`, a path to one, or a QuantizedModel. Statistics are
    collected on the float graph behind it (Q/DQ bypassed). Weight scales are unchanged.
    """
    import json

    import numpy as np
    from onnx import numpy_helper

    from qdq_onnx.files.metadata import PLAN_KEY, SCALES_KEY, get_metadata, set_metadata
    from qdq_onnx.graph.qdq import qdq_pairs, strip_qdq
    from qdq_onnx.quantize.calibration import check_method, collect_stats, group_amax
    from qdq_onnx.quantize.scales import amax_to_scale

    check_method(method, percentile)
    if isinstance(model, QuantizedModel):
        model = model.onnx
    elif isinstance(model, (str, Path)):
        model = load_model(model)
    pairs = [p for p in qdq_pairs(model) if not p.is_weight]
    if not pairs:
        raise QdqError("the model has no activation Q/DQ pairs to calibrate (run insert "
                       "first)")
    groups: dict[str, list[str]] = {p.source: [p.source] for p in pairs}
    plan_json = get_metadata(model, PLAN_KEY)
    if plan_json:
        plan = PlacementPlan.from_dict(json.loads(plan_json))
        for key, members in plan.activation_groups().items():
            tensors = sorted({m.tensor for m in members})
            if key != tensors[0] or len(tensors) > 1:
                for t in tensors:
                    groups.pop(t, None)
                groups[key] = tensors
    float_model = strip_qdq(model)
    stats = collect_stats(float_model, {p.source for p in pairs}, data,
                          batch_size=batch_size, max_samples=max_samples,
                          with_hist=method != "max", show_progress=show_progress)
    amax = group_amax(stats, groups, method, percentile)
    key_of = {t: key for key, members in groups.items() for t in members}
    scale_of = {p.scale: amax_to_scale(np.float32(amax[key_of[p.source]]))[0]
                for p in pairs}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in scale_of:
            t.CopyFrom(numpy_helper.from_array(scale_of[t.name].reshape(tuple(t.dims)),
                                               t.name))
    set_metadata(out, SCALES_KEY, f"calibrated:{method}")
    return out
