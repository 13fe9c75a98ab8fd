"""The trainer: the fake-quant training graph of a Q/DQ model on a training backend, its data
handling, evaluation and emit. `fit` hands one run to the loop (`qdq_onnx.finetune.loop`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from qdq_onnx.data.feeds import as_named, given_by_position, match_inputs
from qdq_onnx.data.images import ImageFolder
from qdq_onnx.data.iterables import is_batch_source, spill, spill_folder
from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend import AUTO, BACKENDS, NO_LOWERING, resolve_backend
from qdq_onnx.finetune.backend.fallback import may_fall_back, probe_step
from qdq_onnx.finetune.callbacks import Callback
from qdq_onnx.finetune.config import FINGERPRINTED, FitConfig, TrainConfig
from qdq_onnx.finetune.emit import emitted_difference, emitted_model, fake_quant_model
from qdq_onnx.finetune.fake_quant import TrainGraph, freeze_unreached, lower_to_fake_quant
from qdq_onnx.finetune.history import History
from qdq_onnx.finetune.lowering import ShapesNeeded
from qdq_onnx.finetune.objective import Objective, Targets
from qdq_onnx.finetune.state import RunState
from qdq_onnx.finetune.teacher import teacher_outputs
from qdq_onnx.graph.batch import fixed_batch, follows_batch
from qdq_onnx.graph.qdq import strip_qdq
from qdq_onnx.graph.shapes import symbolic_sizes
from qdq_onnx.graph.weights import require_finite_weights
from qdq_onnx.parallel import shard_batches
from qdq_onnx.parallel.context import RunContext
from qdq_onnx.quantize.scales import MIN_SCALE, weight_scale
from qdq_onnx.types.scheme import INT8


def _fingerprint(graph: TrainGraph, qdq_model: onnx.ModelProto, config: TrainConfig) -> str:
    """Identifies what is trained: the training graph, the starting weights, the weights'
    schemes and the settings that change the optimisation (a checkpoint of anything else is
    refused)."""
    h = hashlib.sha256()
    for node in graph.model.graph.node:
        h.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)}\n".encode())
    for t in graph.model.graph.initializer:
        h.update(f"{t.name}:{list(t.dims)}\n".encode())
    for t in qdq_model.graph.initializer:  # the starting weights, not just shapes
        h.update(t.SerializeToString())
    fields = {k: v for k, v in config.fingerprint_fields().items() if k in FINGERPRINTED}
    fields["schemes"] = graph.schemes()
    h.update(json.dumps(fields, sort_keys=True).encode())
    return h.hexdigest()[:20]


def hard_coded_batch(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> int | None:
    """The model's fixed batch size when its graph hard-codes it (`follows_batch` fails on
    two samples of `feeds`), else None."""
    batch = fixed_batch(model)
    if batch is None or next(iter(feeds.values())).shape[0] < 2:
        return None
    two = {k: np.asarray(v[:2]) for k, v in feeds.items()}
    return None if follows_batch(model, two) else batch


class Trainer:
    """Fine-tunes the fake-quant lowering of a Q/DQ model and emits the trained Q/DQ model."""

    def __init__(self, qdq_model: onnx.ModelProto, config: TrainConfig | None = None,
                 work_dir: str | os.PathLike | None = None, backend_factory: Any = None,
                 teacher: onnx.ModelProto | None = None, run: RunContext | None = None
                 ) -> None:
        """`backend_factory(graph, objective, config, work_dir)` builds the training backend
        (default: the one `config.backend` names). `teacher`: the float model whose outputs
        are the targets when `config.distill` (default: the Q/DQ model without its Q/DQ).
        `run`: the ranks that train together (gradients reduced every step)."""
        config = config or TrainConfig()
        require_finite_weights(qdq_model)
        self.run = run or RunContext()  # the ranks of a data-parallel run (default: one)
        self.config, self.qdq_model = config, qdq_model
        self.teacher = (teacher or strip_qdq(qdq_model)) if config.distill else None
        self.backend_name = "custom" if backend_factory else resolve_backend(config.backend)
        self._factory = backend_factory or BACKENDS[self.backend_name]
        # `auto` trains with torch what onnxruntime-training cannot (its reason is kept)
        self._auto = backend_factory is None and config.backend == AUTO
        self.fallback_reason: str | None = None
        self._work_dir = work_dir
        self.input_dims: dict[str, tuple[int, ...]] | None = None
        # the batch size the graph hard-codes (None: any; False: not known before data)
        self.hard_batch: int | None | bool = False
        self.graph: TrainGraph | None = None
        self.backend: Any = None
        # A graph input with a symbolic size other than the batch (dynamic height/width, a
        # sequence) is trained at the data's size: the rewrites need sizes, and
        # onnxruntime-training's gradients of broadcasts over symbolic sizes can fail.
        if not symbolic_sizes(qdq_model):
            with contextlib.suppress(ShapesNeeded):  # else built from the data's sizes
                self._build(None)
        self.state = RunState(epochs=0)
        self.steps_done = self.epochs_done = 0  # over every run of this trainer
        self._spills: list[str] = []
        self.fitted_x: Any = None
        self.sync_seconds = 0.0  # the last data-parallel fit's time reducing gradients

    def _build(self, input_dims: dict[str, tuple[int, ...]] | None) -> None:
        """The training graph (specialised to `input_dims` when given), its objective and
        the backend that trains it."""
        config = self.config
        self.graph = lower_to_fake_quant(self.qdq_model, config.learn_scales,
                                         config.weight_bits, input_dims,
                                         lower=self.backend_name not in NO_LOWERING)
        self.objective = Objective.from_config(config, self.graph.model)
        freeze_unreached(self.graph, [p.output for p in self.objective.parts])
        self.fingerprint = _fingerprint(self.graph, self.qdq_model, config)
        try:
            self.backend = self._factory(self.graph, self.objective, config, self._work_dir)
        except QdqError as exc:
            if not may_fall_back(self):
                raise
            return self.fall_back(exc, input_dims)
        self.input_dims = input_dims
        self.refresh_weight_scales()

    def fall_back(self, reason: Exception, input_dims: dict | None) -> None:
        """Train with torch from here (`auto` only, before any step): onnxruntime-training
        cannot build or run this training graph, for `reason`."""
        if self.backend is not None:
            self.backend.close()
        self.fallback_reason, self._auto = str(reason), False
        self.backend_name, self._factory = "torch", BACKENDS["torch"]
        self.backend = self.graph = None
        self._build(input_dims)

    def _sized_for(self, feeds: dict[str, np.ndarray]) -> None:
        """Build the training graph for the sizes of `feeds` when it waits for them; refuse
        data of other sizes than the graph was specialised to."""
        dims = {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}
        if self.hard_batch is False:  # decided once, on the first data
            self.hard_batch = hard_coded_batch(self.qdq_model, feeds)
        if self.graph is None:
            self._build(dims)
            return
        if self.input_dims is None:
            return
        for name, shape in dims.items():
            want = self.input_dims.get(name)
            if want is not None and shape[1:] != want[1:]:
                raise QdqError(
                    f"input {name!r} has samples of size {list(shape[1:])}, but the training "
                    f"graph was built for {list(want[1:])} (the first data's size: a "
                    "model's symbolic sizes are fixed for training); give all data in one "
                    "size, or resize or pad it to one")

    @property
    def history(self) -> History:
        """The last run's History."""
        return self.state.history

    @property
    def step(self) -> int:
        """Optimizer steps of the last run."""
        return self.state.step

    @property
    def epoch(self) -> int:
        """Epochs done by the last run."""
        return self.state.epoch

    # -- parameters ----------------------------------------------------------------------
    def refresh_weight_scales(self) -> None:
        """Weight scales follow the weights: per channel max|w| / qmax, after every step."""
        b = self.backend
        if hasattr(b, "follow_weight_scales"):  # on the backend's device, no host round trip
            b.follow_weight_scales(self.graph.weights, float(MIN_SCALE))
            if self.config.learn_scales:
                b.floor_parameters(self.graph.activation_scales, float(MIN_SCALE))
            return
        for wq in self.graph.weights:
            b.set_parameter(wq.train_scale, weight_scale(b.get_parameter(wq.weight), wq.axis,
                                                         wq.qmax))
        if self.config.learn_scales:
            for name in self.graph.activation_scales:
                v = b.get_parameter(name)
                if np.any(v < MIN_SCALE):
                    # a 0-d scale stays an array (np.maximum returns a scalar)
                    clamped = np.array(np.maximum(v, MIN_SCALE), np.float32).reshape(v.shape)
                    b.set_parameter(name, clamped)

    def restore(self, snapshot: np.ndarray) -> None:
        """Put a `backend.snapshot()` back (weight scales follow)."""
        self.backend.restore(snapshot)
        self.refresh_weight_scales()

    def trained_initializers(self) -> dict[str, np.ndarray]:
        """The trainable parameters' current values by initializer name."""
        return {name: self.backend.get_parameter(name) for name in self.graph.trainable}

    # -- data ----------------------------------------------------------------------------
    def _inputs(self, x: Any) -> dict[str, np.ndarray]:
        arrays = as_named(x)
        if not isinstance(x, dict) and set(arrays) == {""}:
            arrays = {"": np.asarray(x)}
        feeds = match_inputs(arrays, self.qdq_model, source="training data")
        self._sized_for(feeds)
        return feeds

    def args(self, feeds: dict[str, np.ndarray], idx, targets: dict[str, np.ndarray]
             ) -> list:
        """The backend's input arrays for rows `idx` of `feeds` and `targets` (labels or
        distillation targets, by the backend's input name)."""
        return [targets[name][idx] if name in targets else feeds[name][idx]
                for name in self.backend.input_names]

    def outputs_by_name(self, outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's outputs (graph output order) by output name."""
        return dict(zip(self.graph.outputs, outs))

    def _labelled(self, x: Any, y: Any, what: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(inputs, targets): the labels of `y`, or the teacher's outputs when distilling."""
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        if isinstance(y, Targets):
            targets = dict(y)
        elif self.objective.distill:
            folder = spill_folder()
            self._spills.append(folder)
            outputs = [p.output for p in self.objective.parts]
            by_output = teacher_outputs(self.teacher, feeds, folder, outputs,
                                        hard_batch=self.hard_batch or None,
                                        desc=f"{what} targets")
            targets = {p.target: by_output[p.output] for p in self.objective.parts}
        else:
            targets = self.objective.labels(y, f"{what} labels")
        for v in targets.values():
            if v.shape[0] != n:
                raise QdqError(f"{what} data has {n} samples but {v.shape[0]} labels")
        return feeds, targets

    def _materialise(self, x: Any, y: Any, what: str) -> tuple[Any, Any]:
        """(x, y) as arrays: an iterable of (x, y) batches is spilled to a temporary
        folder and memory-mapped (removed by `close`)."""
        distill = self.config.distill
        if isinstance(x, ImageFolder) and y is None:
            return (x.inputs_and_labels()[0], None) if distill else x.inputs_and_labels()
        if y is not None or not is_batch_source(x) or given_by_position(x, self.qdq_model):
            if y is None and not distill:
                raise QdqError(f"{what} labels are missing: pass y, or an iterable of "
                               "(x, y) batches as x (or distill from the float model)")
            return x, y
        folder = spill_folder()
        self._spills.append(folder)
        return spill(x, folder, f"{what} data", need_labels=not distill)

    def training_data(self, x: Any, y: Any, validation_split: float, validation_data: Any
                      ) -> tuple[dict, np.ndarray, tuple | None]:
        """(training feeds, labels, validation (x, y) or None)."""
        x, y = self._materialise(x, y, "training")
        if validation_data is not None and not isinstance(validation_data, (tuple, list)):
            validation_data = self._materialise(validation_data, None, "validation")
        feeds, targets = self._labelled(x, y, "training")
        self.fitted_x = feeds  # matched to the model inputs (an image folder is sized)
        val = validation_data
        if val is None and validation_split > 0:
            n = next(iter(feeds.values())).shape[0]
            cut = n - max(1, int(round(n * validation_split)))
            val = ({k: v[cut:] for k, v in feeds.items()},
                   Targets({k: v[cut:] for k, v in targets.items()}))
            feeds = {k: v[:cut] for k, v in feeds.items()}
            targets = {k: v[:cut] for k, v in targets.items()}
        elif val is not None and self.objective.distill and isinstance(val, (tuple, list)):
            val = (val[0], None)  # distillation compares with the teacher, not labels
        return feeds, targets, val

    def sample(self, n: int = 64) -> Any:
        """The first `n` samples of the last `fit`'s inputs as plain arrays (read now from
        memory-mapped data), for the emit check; None before any fit."""
        x = self.fitted_x
        if isinstance(x, dict):
            return {k: np.array(v[:n]) for k, v in x.items()}
        return None if x is None else np.array(x[:n])

    # -- evaluation ----------------------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray | list[np.ndarray]:
        """Model outputs for `x` from the training graph's eval mode (batches of
        `batch_size`): one array, or a list in output order for several outputs."""
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        batch_size = self.hard_batch or batch_size
        dummy = self.objective.dummy(n)
        batches = [self.backend.evaluate(self.args(feeds, slice(s, min(s + batch_size, n)),
                                                   dummy))[1]
                   for s in range(0, n, batch_size)]
        outs = [np.concatenate([b[i] for b in batches]) for i in range(len(self.graph.outputs))]
        return outs[0] if len(outs) == 1 else outs

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        """{'loss': ..., 'accuracy': ...} of the eval mode on (x, y); accuracy is
        omitted where undefined (MSE). In a data-parallel run each rank evaluates every
        N-th batch and the sums are reduced: every rank gets the figures of all of (x, y)."""
        feeds, targets = self._labelled(x, y, "evaluation")
        n = next(iter(feeds.values())).shape[0]
        batch_size = self.hard_batch or batch_size
        w = self.run.world
        keys = [p.output for p in self.objective.parts]
        sums = np.zeros(1 + 2 * len(keys))
        for start in shard_batches(range(0, n, batch_size), w.rank, w.size):
            idx = slice(start, min(start + batch_size, n))
            loss, outs = self.backend.evaluate(self.args(feeds, idx, targets))
            sums[0] += loss * (idx.stop - idx.start)
            batch = {k: v[idx] for k, v in targets.items()}
            for output, (hits, count) in self.objective.correct(self.outputs_by_name(outs),
                                                                batch).items():
                i = 1 + 2 * keys.index(output)
                sums[i:i + 2] += (hits, count)
        sums = w.allreduce_sum(sums, "the validation reduction")
        logs = {"loss": float(sums[0]) / n}
        if self.config.metrics:
            for k, output in enumerate(keys):
                hits, count = sums[1 + 2 * k:3 + 2 * k]
                if count:
                    key = "accuracy" if len(keys) == 1 else f"{output}_accuracy"
                    logs[key] = float(hits / count)
        return logs

    # -- training ------------------------------------------------------------------------
    def fit(self, x: Any, y: Any = None, fit: FitConfig | None = None,
            validation_data: Any = None, callbacks: Sequence[Callback] = ()) -> History:
        """Train for `fit.epochs` epochs (a resumed run: until that many are done); returns
        the History. See `FitConfig` for the settings and `qdq_onnx.finetune.loop` for
        what a run does. `x` (and `validation_data`) may be an iterable of (x, y) batches
        with `y` None: it is read once into memory-mapped temporary files."""
        from qdq_onnx.finetune.loop import FitLoop

        fit = fit or FitConfig()
        feeds, targets, val = self.training_data(x, y, fit.validation_split, validation_data)
        fixed = self.hard_batch
        if fixed and fit.batch_size != fixed:
            raise QdqError(f"the model's graph hard-codes its batch size {fixed} (with the "
                           "batch relaxed its outputs mix the samples, e.g. a Reshape to "
                           f"[{fixed}, -1, ...]): train it with batch size {fixed} "
                           f"(--batch-size {fixed})")
        if may_fall_back(self):  # one step tried before the run: the engine may fail there
            probe_step(self, feeds, targets, fit.batch_size)
        loop = FitLoop(self, feeds, targets, val, fit, list(callbacks))
        history = loop.run()
        self.sync_seconds = loop.sync.seconds if loop.sync is not None else 0.0
        # A resumed run counts the steps it continued from: the emitted training record is
        # the same as the uninterrupted run's.
        self.steps_done += loop.state.step
        self.epochs_done += loop.state.epoch
        return history

    # -- emit ----------------------------------------------------------------------------
    def emit(self, sample: Any | None = None, provenance: dict[str, Any] | None = None
             ) -> onnx.ModelProto:
        """The trained Q/DQ model for TensorRT, checked against the training graph's eval
        output on `sample` (bit-exact or within 1e-6, else QdqError)."""
        if self.graph is None:
            raise QdqError("nothing to emit yet: the training graph of this model is built "
                           "for the sizes of the first data (fit first)")
        bits = self.graph.weight_bits
        meta = {**self.config.fingerprint_fields(),
                "weight_bits": INT8.bits if bits is None else bits,
                "steps": self.steps_done, "epochs": self.epochs_done, **(provenance or {})}
        out = emitted_model(self.qdq_model, self.graph, self.trained_initializers(), meta)
        if sample is not None:
            self.check_emitted(out, sample)
        return out

    def fake_quant_model(self) -> onnx.ModelProto:
        """The training graph's forward pass with the current parameters, as a plain model."""
        params = {t.name: self.backend.get_parameter(t.name)
                  for t in self.graph.model.graph.initializer
                  if t.name in set(self.graph.trainable) | set(self.graph.frozen)}
        return fake_quant_model(self.graph, params)

    def check_emitted(self, emitted: onnx.ModelProto, sample: Any) -> float:
        """Max |emitted - training graph| on `sample`; QdqError above 1e-6 (relative)."""
        return emitted_difference(emitted, self.fake_quant_model(), self.graph.outputs,
                                  self._inputs(sample))

    def close(self) -> None:
        """Release the backend and remove its work folder when the trainer made it, and
        the folders of spilled batches."""
        if self.backend is not None:
            self.backend.close()
        for folder in self._spills:
            shutil.rmtree(folder, ignore_errors=True)
        self._spills.clear()
