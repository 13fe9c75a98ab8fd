"""The Python API of the original toolkit, on ONNX: quantize_model() -> QuantizedModel,
built on the pipeline's stage functions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from qdq_onnx import pipeline
from qdq_onnx.errors import QdqError
from qdq_onnx.placement.cases import CustomQDQInsertionCase
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.rules import RuleSet
from qdq_onnx.placement.spec import QuantizationSpec
from qdq_onnx.quantize.insert import InsertReport


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
                metrics: Sequence[str] = ("accuracy",), learning_rate: float | None = None,
                from_logits: bool = True, weight_decay: float = 0.01,
                schedule: str | None = None, warmup_steps: int = 0, step_size: int = 1,
                gamma: float = 0.1, learn_scales: bool = False, seed: int = 0,
                device: str = "cpu", work_dir: str | os.PathLike | None = None
                ) -> QuantizedModel:
        """Configure fine-tuning (learning rate and schedule default to TrainConfig's: 1e-5,
        cosine). Optimizers: adam, adamw, sgd. Losses:
        sparse_categorical_crossentropy, categorical_crossentropy, binary_crossentropy, mse
        (from logits, or from probabilities with from_logits=False). Schedules: constant,
        cosine, step (x gamma every step_size epochs), each with optional linear warm-up.
        learn_scales trains activation scales (LSQ gradient); otherwise they stay as
        calibrated. Weight scales always follow the weights."""
        from qdq_onnx.finetune import TrainConfig, Trainer

        if isinstance(metrics, str):
            metrics = (metrics,)
        chosen = {k: v for k, v in (("learning_rate", learning_rate), ("schedule", schedule))
                  if v is not None}  # unset: TrainConfig's measured defaults
        config = TrainConfig(optimizer=str(optimizer).lower(), **chosen,
                             loss=loss, from_logits=from_logits, metrics=tuple(metrics or ()),
                             weight_decay=weight_decay,
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

    def fit(self, x: Any, y: Any = None, batch_size: int = 32, epochs: int = 1,
            validation_split: float = 0.0, validation_data: tuple | None = None,
            shuffle: bool = True, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, early_stopping_patience: int | None = None,
            verbose: int = 1, keep_best: bool = True, steps_per_epoch: int | None = None):
        """Train for `epochs`; returns a Keras-like History (`history.history["loss"]`).

        With validation data (`validation_split` or `validation_data`) and `keep_best`, the
        starting weights are scored first and the best by validation accuracy (else loss),
        the start included, are kept: the result is never worse than the start on that
        data (`history.kept` says when earlier weights were kept). With `checkpoint_dir`, a
        checkpoint (weights, optimizer state, loop position) is written atomically after
        every epoch and at an interruption; `resume=True` continues from it. Ctrl-C stops
        at the next step boundary (`history.stopped`). As in Keras, `x` may be a
        `tf.data.Dataset`, `PyDataset`, generator or list of (x, y) batches with `y` None
        (and `validation_data` likewise); it is read once into memory-mapped temporary
        files."""
        from qdq_onnx.progress import epoch_printer

        trainer = self._need_trainer()
        history = trainer.fit(x, y, batch_size=batch_size, epochs=epochs,
                              validation_split=validation_split,
                              validation_data=validation_data, shuffle=shuffle,
                              checkpoint_dir=checkpoint_dir, resume=resume,
                              early_stopping_patience=early_stopping_patience,
                              verbose=verbose,
                              on_epoch_end=epoch_printer() if verbose else None,
                              keep_best=keep_best, steps_per_epoch=steps_per_epoch)
        return history

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> list[float]:
        """[loss, accuracy] (accuracy omitted for MSE), like Keras."""
        logs = self._need_trainer().evaluate(x, y, batch_size)
        return [logs[k] for k in ("loss", "accuracy") if k in logs]

    def predict(self, x: Any, batch_size: int = 256):
        """Model outputs: the training graph's eval mode once compiled, else the Q/DQ graph."""
        if self._trainer is None:
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
        return self._trainer.emit(self._trainer.sample(64), provenance={"rules": self.plan.rules,
                                                      "spec": self.plan.spec,
                                                      "cases": self.plan.cases})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the TensorRT Q/DQ ONNX file atomically (full ONNX checker first)."""
        return pipeline.save(self.export(), path, check="the quantized model")

    def summary(self) -> str:
        """One line: activation Q/DQ pairs, quantized inputs, weights, inputs left float."""
        c = self.plan.counts()
        return (f"{c['activation_qdq_pairs']} activation Q/DQ pairs on {c['activation_inputs']} "
                f"inputs, {c['weights']} weights, {c['left_float']} inputs left float by rule")

    def __repr__(self) -> str:
        return f"QuantizedModel({self.summary()})"

    def __del__(self) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            trainer.close()


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


def quantize_model(model: Any, quantization_mode: str = "full",
                   quantization_spec: QuantizationSpec | None = None,
                   custom_qdq_cases: Sequence[CustomQDQInsertionCase | str] | None = None,
                   rules: RuleSet | str | None = None, calibration_data: Any = None,
                   calibration_method: str = "max", calibration_percentile: float = 99.99,
                   calibration_batch_size: int = 32, opset: int | None = None,
                   force: bool = False, weight_bits: int = 8,
                   keep_layout: bool = False) -> QuantizedModel:
    """Insert Q/DQ following TensorRT's placement policy (or the given rules).

    `model` is a Keras model, an `onnx.ModelProto` or a path (.onnx, .keras, .h5, SavedModel);
    it is never modified, nor is `quantization_spec`. Modes: "full" (every supported layer,
    spec/cases adjust) and "partial" (only what the spec/cases name). With
    `calibration_data` the activation scales are calibrated (`calibration_method`),
    otherwise they are placeholders. Layout Transposes a converter left around weighted ops
    are moved to the graph's edges unless `keep_layout`. Returns a QuantizedModel."""
    placement = pipeline.PlacementConfig(rules=rules, mode=quantization_mode,
                                         spec=quantization_spec,
                                         cases=tuple(custom_qdq_cases or ()), force=force,
                                         keep_layout=keep_layout)
    calibration = pipeline.CalibrationConfig(method=calibration_method,
                                             percentile=calibration_percentile,
                                             batch_size=calibration_batch_size)
    q = pipeline.quantize(_as_onnx(model, opset), placement, calibration,
                          data=calibration_data, weight_bits=weight_bits)
    return QuantizedModel(q.float_model, q.plan, q.qdq, q.report, q.notes, weight_bits)


def calibrate(model: Any, data: Any, method: str = "max", percentile: float = 99.99,
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
    out, _ = pipeline.recalibrate(model, data, pipeline.CalibrationConfig(
        method=method, percentile=percentile, batch_size=batch_size, max_samples=max_samples,
        show_progress=show_progress))
    return out
