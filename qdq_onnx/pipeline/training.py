"""Fine-tuning through the pipeline: a `Training` session over one Q/DQ model (what the
Keras-style `QuantizedModel.compile` keeps) and `finetune`, one run from start to emit (what
`qdq-onnx finetune` does)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from qdq_onnx.errors import SettingError
from qdq_onnx.finetune.backend import require_backend
from qdq_onnx.finetune.callbacks import Callback
from qdq_onnx.finetune.config import FitConfig, TrainConfig
from qdq_onnx.finetune.history import History
from qdq_onnx.finetune.objective import Targets
from qdq_onnx.graph.names import output_aliases

# The TrainConfig settings that may be a dict by output name.
PER_OUTPUT_SETTINGS = ("loss", "loss_weights", "distill_loss")


class OutputNames:
    """Dicts keyed by output name (per-output settings, labels) with the model's positional
    aliases (`output_<i>`, the names converted Keras models had before their outputs were
    named by their layers) resolved to the outputs they stand for."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.aliases = output_aliases([o.name for o in model.graph.output])

    def resolve(self, value: Any, what: str) -> Any:
        """`value` with alias keys renamed, when it is a plain dict using one."""
        if not isinstance(value, Mapping) or isinstance(value, Targets) \
                or not any(k in self.aliases for k in value):
            return value
        out: dict[Any, Any] = {}
        for key, v in value.items():
            name = self.aliases.get(key, key)
            if name in out:
                raise SettingError(what, f"names output {name!r} twice ({name!r} and its "
                                         f"positional alias {key!r} or the other way round)")
            out[name] = v
        return out

    def config(self, config: TrainConfig) -> TrainConfig:
        """`config` with its per-output dicts keyed by output name."""
        changes = {k: self.resolve(getattr(config, k), k) for k in PER_OUTPUT_SETTINGS}
        changes = {k: v for k, v in changes.items() if v is not getattr(config, k)}
        return dataclasses.replace(config, **changes) if changes else config

    def labels(self, y: Any) -> Any:
        """Labels `y` (a dict by output name is resolved)."""
        return self.resolve(y, "labels")

    def validation(self, data: Any) -> Any:
        """(x, y) validation data with `y` resolved."""
        if isinstance(data, (tuple, list)) and len(data) == 2:
            y = self.labels(data[1])
            if y is not data[1]:
                return type(data)([data[0], y])
        return data


class Training:
    """A fine-tuning session: the fake-quant training graph of `qdq_model` on the backend
    `config.backend` names. `fit` trains, `evaluate`/`predict` run its eval mode, `emit`
    writes the trained weights back into the Q/DQ model (checked against training)."""

    def __init__(self, qdq_model: onnx.ModelProto, config: TrainConfig | None = None,
                 work_dir: str | os.PathLike | None = None, backend_factory: Any = None,
                 teacher: onnx.ModelProto | None = None) -> None:
        """`teacher`: the float model distillation (`config.distill`) learns from (default:
        `qdq_model` with its Q/DQ removed). A model with an FP16/BF16 remainder trains in
        its FP32 form (`pipeline.widen`); `emit` gives FP32: type it with
        `pipeline.type_remainder` before writing it for TensorRT."""
        from qdq_onnx.finetune.trainer import Trainer
        from qdq_onnx.parallel.context import RunContext
        from qdq_onnx.precision.widen import widen

        qdq_model = widen(qdq_model)  # a typed (FP16/BF16) file trains in its FP32 form
        self._names = OutputNames(qdq_model)
        config = self._names.config(config or TrainConfig())
        if backend_factory is None:
            require_backend(config.backend)
        self.config = config
        self._trainer = Trainer(qdq_model, config, work_dir, backend_factory, teacher,
                                RunContext.of_process())

    @property
    def steps(self) -> int:
        """Optimizer steps over every `fit` so far."""
        return self._trainer.steps_done

    @property
    def history(self) -> History:
        """The last `fit`'s History."""
        return self._trainer.history

    @property
    def trained_by(self) -> str:
        """What trains, in words ("onnxruntime (onnxruntime-training 1.19.2) on cpu"); where
        `auto` moved to torch, why."""
        from qdq_onnx.finetune.backend import backend_description

        t = self._trainer
        text = backend_description(t.backend_name, self.config.device)
        return text if t.fallback_reason is None else f"{text}, since {t.fallback_reason}"

    def fit(self, x: Any, y: Any = None, fit: FitConfig | None = None,
            validation_data: Any = None, callbacks: Sequence[Callback] = ()) -> History:
        """One run of `fit.epochs` epochs (see FitConfig); the History."""
        names = self._names
        return self._trainer.fit(x, names.labels(y), fit, names.validation(validation_data),
                                 callbacks)

    def evaluate(self, x: Any, y: Any = None, batch_size: int = 256) -> dict[str, float]:
        """{'loss', 'accuracy'} of the eval mode on (x, y) ('<output>_accuracy' for each
        output of several; `y` None when distilling)."""
        return self._trainer.evaluate(x, self._names.labels(y), batch_size)

    def predict(self, x: Any, batch_size: int = 256):
        """The eval mode's outputs for `x`."""
        return self._trainer.predict(x, batch_size)

    def emit(self, provenance: dict[str, Any] | None = None, sample_size: int = 64
             ) -> onnx.ModelProto:
        """The trained Q/DQ model, checked on `sample_size` of the fitted samples against the
        training graph (QdqError above 1e-6)."""
        t = self._trainer
        return t.emit(t.sample(sample_size), provenance=provenance)

    def close(self) -> None:
        """Release the backend and temporary files."""
        self._trainer.close()


@dataclass
class FineTuned:
    """The emitted Q/DQ model (checked against the training graph) and the History."""

    model: onnx.ModelProto
    history: History
    trained_by: str = ""  # the backend and engine that trained (Training.trained_by)


def finetune(qdq_model: onnx.ModelProto, x: Any, y: Any = None,
             config: TrainConfig | None = None, fit: FitConfig | None = None,
             validation_data: Any = None, callbacks: Sequence[Callback] = (),
             provenance: dict | None = None, teacher: onnx.ModelProto | None = None,
             **deprecated: Any) -> FineTuned:
    """Quantization-aware fine-tuning of a Q/DQ model, then emit (even after Ctrl-C: the
    History says `interrupted` and the model holds the weights reached). `x` with `y` None
    may be an iterable of (x, y) batches; with `config.distill`, `y` is not needed (the
    targets are `teacher`'s outputs, by default the Q/DQ model without its Q/DQ)."""
    callbacks = list(callbacks) + _old_epoch_callback(deprecated)
    fit = fit or FitConfig()
    session = Training(qdq_model, config, teacher=teacher)
    try:
        history = session.fit(x, y, fit, validation_data, callbacks)
        return FineTuned(session.emit(provenance, fit.sample_size), history, session.trained_by)
    finally:
        session.close()


def _old_epoch_callback(deprecated: dict[str, Any]) -> list[Callback]:
    """`on_epoch_end=function(epoch, epochs, logs, seconds)`, the old form, as a Callback."""
    unknown = set(deprecated) - {"on_epoch_end"}
    if unknown:
        raise TypeError(f"finetune() got unexpected keyword argument(s) {sorted(unknown)}")
    function = deprecated.get("on_epoch_end")
    if function is None:
        return []
    import warnings

    warnings.warn("finetune(on_epoch_end=f) is deprecated: pass callbacks=[Callback]",
                  DeprecationWarning, stacklevel=3)

    class _Function(Callback):
        def on_epoch_end(self, state, logs, seconds):
            function(state.epoch - 1, state.epochs, logs, seconds)

    return [_Function()]
