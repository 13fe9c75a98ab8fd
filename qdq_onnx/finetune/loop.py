"""The fine-tuning loop: fake-quant training graph, a training backend, checkpoints with exact
resume, early stopping, Ctrl-C at step boundaries, NaN stop, and emit."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from qdq_onnx.data.feeds import match_inputs
from qdq_onnx.data.images import ImageFolder
from qdq_onnx.data.iterables import is_batch_source, spill, spill_folder
from qdq_onnx.data.prefetch import Prefetch
from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.checkpoints import CheckpointStore
from qdq_onnx.finetune.config import FINGERPRINTED, TrainConfig
from qdq_onnx.finetune.emit import emitted_difference, emitted_model, fake_quant_model
from qdq_onnx.finetune.fake_quant import TrainGraph, lower_to_fake_quant
from qdq_onnx.finetune.history import EarlyStopping, History, KeepBest
from qdq_onnx.finetune.interrupt import Interrupt
from qdq_onnx.finetune.losses import LossSpec
from qdq_onnx.finetune.schedules import learning_rate
from qdq_onnx.progress import progress
from qdq_onnx.quantize.scales import MIN_SCALE, weight_scale

log = logging.getLogger("qdq_onnx.finetune")
# Called after every epoch with (epoch index, epochs, logs, seconds).
EpochCallback = Callable[[int, int, dict[str, float], float], None]


class TrainingStopped(QdqError):
    """Training stopped on a NaN/Inf loss; the last good weights were kept."""


def _fingerprint(graph: TrainGraph, qdq_model: onnx.ModelProto, config: TrainConfig) -> str:
    """Identifies what is trained: the training graph, the starting weights and the
    settings that change the optimisation (a checkpoint of anything else is refused)."""
    h = hashlib.sha256()
    for node in graph.model.graph.node:
        h.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)}\n".encode())
    for t in graph.model.graph.initializer:
        h.update(f"{t.name}:{list(t.dims)}\n".encode())
    for t in qdq_model.graph.initializer:  # the starting weights, not just shapes
        h.update(t.SerializeToString())
    fields = {k: v for k, v in config.fingerprint_fields().items() if k in FINGERPRINTED}
    h.update(json.dumps(fields, sort_keys=True).encode())
    return h.hexdigest()[:20]


class Trainer:
    """Fine-tunes the fake-quant lowering of a Q/DQ model and emits the trained Q/DQ model."""

    def __init__(self, qdq_model: onnx.ModelProto, config: TrainConfig,
                 work_dir: str | os.PathLike | None = None, backend_factory: Any = None
                 ) -> None:
        """`backend_factory(graph, loss, config, work_dir)` builds the training backend
        (default: onnxruntime-training)."""
        config.validate()
        self.config, self.qdq_model = config, qdq_model
        self.loss = LossSpec(config.loss, config.from_logits)
        self.graph = lower_to_fake_quant(qdq_model, config.weight_bits, config.learn_scales)
        out_info = next(o for o in self.graph.model.graph.output if o.name == self.graph.output)
        self.output_shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                                  for d in out_info.type.tensor_type.shape.dim)
        self.fingerprint = _fingerprint(self.graph, qdq_model, config)
        if backend_factory is None:
            from qdq_onnx.finetune.backend.ort_backend import OrtTrainingBackend

            self.backend = OrtTrainingBackend(self.graph, self.loss, config.optimizer,
                                              config.weight_decay, config.device, work_dir)
        else:
            self.backend = backend_factory(self.graph, self.loss, config, work_dir)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.history = History()
        self._spills: list[str] = []
        self.fitted_x: Any = None
        self.refresh_weight_scales()

    # -- parameters ----------------------------------------------------------------------
    def refresh_weight_scales(self) -> None:
        """Weight scales follow the weights: per channel max|w| / qmax, after every step."""
        b = self.backend
        for wq in self.graph.weights:
            b.set_parameter(wq.train_scale, weight_scale(b.get_parameter(wq.weight), wq.axis,
                                                         wq.qmax))
        if self.config.learn_scales:
            for name in self.graph.activation_scales:
                v = b.get_parameter(name)
                if np.any(v < MIN_SCALE):
                    b.set_parameter(name, np.maximum(v, MIN_SCALE).astype(np.float32))

    def _restore(self, snapshot: np.ndarray) -> None:
        self.backend.restore(snapshot)
        self.refresh_weight_scales()

    def trained_initializers(self) -> dict[str, np.ndarray]:
        """The trainable parameters' current values by initializer name."""
        return {name: self.backend.get_parameter(name) for name in self.graph.trainable}

    # -- data ----------------------------------------------------------------------------
    def _inputs(self, x: Any) -> dict[str, np.ndarray]:
        arrays = x if isinstance(x, dict) else {"": np.asarray(x)}
        return match_inputs(dict(arrays), self.qdq_model, source="training data")

    def _args(self, feeds: dict[str, np.ndarray], idx, labels: np.ndarray) -> list:
        label_name = "labels" if self.loss.kind == "ce" else "target"
        return [labels[idx] if name == label_name else feeds[name][idx]
                for name in self.backend.input_names]

    def _dummy_labels(self, n: int) -> np.ndarray:
        if self.loss.kind == "ce":
            return np.zeros(n, np.int64)
        return np.zeros((n, *[max(d, 1) for d in self.output_shape[1:]]), np.float32)

    def _labelled(self, x: Any, y: Any, what: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        labels = self.loss.labels(y, self.output_shape, f"{what} labels")
        if labels.shape[0] != n:
            raise QdqError(f"{what} data has {n} samples but {labels.shape[0]} labels")
        return feeds, labels

    # -- evaluation ----------------------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Model outputs for `x` from the training graph's eval mode (batches of
        `batch_size`)."""
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        labels = self._dummy_labels(n)
        return np.concatenate([
            self.backend.evaluate(self._args(feeds, slice(s, min(s + batch_size, n)),
                                             labels))[1]
            for s in range(0, n, batch_size)])

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        """{'loss': ..., 'accuracy': ...} of the eval mode on (x, y); accuracy is
        omitted where undefined (MSE)."""
        feeds, labels = self._labelled(x, y, "evaluation")
        n = labels.shape[0]
        total_loss, hits, count = 0.0, 0, 0
        for start in range(0, n, batch_size):
            idx = slice(start, min(start + batch_size, n))
            loss, out = self.backend.evaluate(self._args(feeds, idx, labels))
            total_loss += loss * (idx.stop - idx.start)
            c = self.loss.correct(out, labels[idx])
            if c is not None:
                hits, count = hits + c[0], count + c[1]
        logs = {"loss": total_loss / n}
        if count and self.config.metrics:
            logs["accuracy"] = hits / count
        return logs

    # -- training ------------------------------------------------------------------------
    def _materialise(self, x: Any, y: Any, what: str) -> tuple[Any, Any]:
        """(x, y) as arrays: an iterable of (x, y) batches is spilled to a temporary
        folder and memory-mapped (removed by `close`)."""
        if isinstance(x, ImageFolder) and y is None:
            return x.inputs_and_labels()
        if y is not None or not is_batch_source(x):
            if y is None:
                raise QdqError(f"{what} labels are missing: pass y, or an iterable of "
                               "(x, y) batches as x")
            return x, y
        folder = spill_folder()
        self._spills.append(folder)
        feeds, labels = spill(x, folder, f"{what} data")
        return feeds, labels

    def _training_data(self, x: Any, y: Any, validation_split: float,
                       validation_data: Any) -> tuple[dict, np.ndarray, tuple | None]:
        """(training feeds, labels, validation (x, y) or None)."""
        x, y = self._materialise(x, y, "training")
        if validation_data is not None and not isinstance(validation_data, (tuple, list)):
            validation_data = self._materialise(validation_data, None, "validation")
        feeds, labels = self._labelled(x, y, "training")
        self.fitted_x = feeds  # matched to the model inputs (an image folder is sized)
        val = validation_data
        if val is None and validation_split > 0:
            n = labels.shape[0]
            cut = n - max(1, int(round(n * validation_split)))
            val = ({k: v[cut:] for k, v in feeds.items()}, np.asarray(y)[cut:])
            feeds, labels = {k: v[:cut] for k, v in feeds.items()}, labels[:cut]
        return feeds, labels, val

    def sample(self, n: int = 64) -> Any:
        """The first `n` samples of the last `fit`'s inputs as plain arrays (read now from
        memory-mapped data), for the emit check; None before any fit."""
        x = self.fitted_x
        if isinstance(x, dict):
            return {k: np.array(v[:n]) for k, v in x.items()}
        return None if x is None else np.array(x[:n])

    def fit(self, x: Any, y: Any = None, batch_size: int = 32, epochs: int = 1,
            validation_split: float = 0.0, validation_data: tuple | None = None,
            shuffle: bool = True, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, early_stopping_patience: int | None = None,
            verbose: int = 1, stop_after_steps: int | None = None,
            on_epoch_end: EpochCallback | None = None, keep_best: bool = True,
            steps_per_epoch: int | None = None) -> History:
        """Train until `epochs` epochs are done (counting resumed ones); returns the History.

        With validation data and `keep_best`, the starting weights are evaluated first and
        the best weights by validation (accuracy, else loss), the start included, are the
        ones kept (`history.kept` says when they are not the last epoch's). Without
        validation data the last weights are returned. `x` (and `validation_data`) may be
        an iterable of (x, y) batches (generator, `tf.data.Dataset`, `PyDataset`) with `y`
        None: it is read once into memory-mapped temporary files, then trained on like
        arrays (`fitted_x` holds the inputs). `steps_per_epoch` (Keras's name)
        trains on that many batches of the shuffled data per epoch. `verbose` shows a progress
        bar on a
        terminal; `on_epoch_end` receives each epoch's logs; `stop_after_steps` simulates
        an interruption (tests)."""
        if batch_size <= 0 or epochs <= 0 or (steps_per_epoch is not None
                                               and steps_per_epoch <= 0):
            raise QdqError("batch_size, epochs and steps_per_epoch must be positive integers")
        if not 0.0 <= validation_split < 1.0:
            raise QdqError(f"validation_split must be in [0, 1), got {validation_split}")
        feeds, labels, val = self._training_data(x, y, validation_split, validation_data)
        if resume and checkpoint_dir is None:
            raise QdqError("resume needs a checkpoint directory")
        store = CheckpointStore(checkpoint_dir, self.fingerprint) if checkpoint_dir else None
        if store is not None and resume:
            self._resume(store)
        run = _Run(self, feeds, labels, batch_size, epochs, shuffle, store, verbose,
                   stop_after_steps, on_epoch_end, steps_per_epoch)
        stopping = EarlyStopping(early_stopping_patience) \
            if early_stopping_patience is not None else None
        keep = self._keep_best(val, batch_size) if keep_best else None
        with Interrupt() as interrupt:
            while self.epoch < epochs:
                logs = run.epoch(interrupt)
                if logs is None:
                    return self.history
                self._end_epoch(run, logs, val, batch_size)
                if keep is not None:
                    keep.update(self.epoch - 1, logs, self.backend.snapshot)
                if stopping is not None and stopping.update(logs, self.backend.snapshot):
                    self._restore(stopping.best)
                    self.history.stopped = "early_stopping"
                    break
        if keep is not None and stopping is None:
            self.history.kept = keep.summary(self.epoch - 1)
            if self.history.kept:
                self._restore(keep.best)
                log.info(self.history.kept)
        self.history.steps = self.step
        return self.history

    def _keep_best(self, val: tuple | None, batch_size: int) -> KeepBest | None:
        """The validation score of the starting weights (a fresh run only: a resumed one
        keeps its last weights)."""
        if val is None or self.step > 0:
            return None
        start = {f"val_{k}": v for k, v in self.evaluate(val[0], val[1],
                                                          max(batch_size, 256)).items()}
        return KeepBest(start, self.backend.snapshot)

    def _end_epoch(self, run: _Run, logs: dict[str, float], val: tuple | None,
                   batch_size: int) -> None:
        if val is not None:
            for k, v in self.evaluate(val[0], val[1], batch_size=max(batch_size, 256)).items():
                logs[f"val_{k}"] = v
        self.history.append(self.epoch, logs)
        log.info("epoch %d/%d: %s", self.epoch + 1, run.epochs, logs)
        if run.on_epoch_end is not None:
            run.on_epoch_end(self.epoch, run.epochs, logs, time.perf_counter() - run.started)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.save_checkpoint(run.store)

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, store: CheckpointStore | None) -> None:
        """Write a checkpoint (backend state and loop position) to `store`, if any."""
        if store is not None:
            store.save(self.backend, {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                                      "step": self.step, "history": self.history.to_dict(),
                                      "config": self.config.fingerprint_fields()})

    def _resume(self, store: CheckpointStore) -> None:
        info = store.load(self.backend)
        self.refresh_weight_scales()
        self.epoch, self.step = int(info["epoch"]), int(info["step"])
        self.batch_in_epoch = int(info["batch_in_epoch"])
        self.history = History.from_dict(info["history"])

    # -- emit ----------------------------------------------------------------------------
    def emit(self, sample: Any | None = None, provenance: dict[str, Any] | None = None
             ) -> onnx.ModelProto:
        """The trained Q/DQ model for TensorRT, checked against the training graph's eval
        output on `sample` (bit-exact or within 1e-6, else QdqError)."""
        meta = {**self.config.fingerprint_fields(), "steps": self.step, "epochs": self.epoch,
                **(provenance or {})}
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
        return emitted_difference(emitted, self.fake_quant_model(), self.graph.output,
                                  self._inputs(sample))

    def close(self) -> None:
        """Release the backend and remove its work folder when the trainer made it, and
        the folders of spilled batches."""
        self.backend.close()
        for folder in self._spills:
            shutil.rmtree(folder, ignore_errors=True)
        self._spills.clear()


class _Run:
    """One call of `fit`: the data, the epoch in progress and its running metrics."""

    def __init__(self, trainer: Trainer, feeds, labels, batch_size, epochs, shuffle, store,
                 verbose, stop_after_steps, on_epoch_end, steps_per_epoch=None) -> None:
        self.t, self.feeds, self.labels = trainer, feeds, labels
        self.batch_size, self.epochs, self.shuffle = batch_size, epochs, shuffle
        self.store, self.verbose, self.stop_after = store, verbose, stop_after_steps
        self.on_epoch_end = on_epoch_end
        self.n = labels.shape[0]
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        if steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, steps_per_epoch)
        self.last_good = trainer.backend.snapshot()
        self.lr = trainer.config.learning_rate
        self.started = time.perf_counter()

    def epoch(self, interrupt: Interrupt) -> dict[str, float] | None:
        """Train the rest of the current epoch; its logs, or None if interrupted."""
        t = self.t
        order = (np.random.default_rng(t.config.seed + t.epoch).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        self.started = time.perf_counter()
        totals = np.zeros(4)  # loss * samples, samples, correct, counted
        steps = range(t.batch_in_epoch, self.steps_per_epoch)
        rows = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in steps]
        with progress(total=self.steps_per_epoch, desc=f"epoch {t.epoch + 1}/{self.epochs}",
                      unit="step", enable=self.verbose > 0) as bar, \
                Prefetch(lambda idx: t._args(self.feeds, idx, self.labels), rows) as ahead:
            bar.update(t.batch_in_epoch)
            for b, idx, args in zip(steps, rows, ahead):
                if interrupt.requested or (self.stop_after is not None
                                           and t.step >= self.stop_after):
                    t.batch_in_epoch = b
                    t.save_checkpoint(self.store)
                    t.history.stopped, t.history.steps = "interrupted", t.step
                    return None
                self.train_step(b, idx, args, totals)
                post = {"loss": f"{totals[0] / totals[1]:.4f}"}
                if totals[3]:
                    post["acc"] = f"{totals[2] / totals[3]:.4f}"
                bar.set_postfix(post)
                bar.update(1)
        logs = {"loss": totals[0] / max(totals[1], 1)}
        if totals[3] and t.config.metrics:
            logs["accuracy"] = totals[2] / totals[3]
        logs["lr"] = self.lr
        return logs

    def train_step(self, b: int, idx: np.ndarray, args: list, totals: np.ndarray) -> None:
        t, cfg = self.t, self.t.config
        total = self.steps_per_epoch * self.epochs
        self.lr = learning_rate(cfg.learning_rate, t.step, total, cfg.schedule, cfg.warmup_steps,
                                cfg.step_size, cfg.gamma, self.steps_per_epoch)
        loss, out = t.backend.forward_backward(args)
        if not math.isfinite(loss):
            t._restore(self.last_good)
            t.batch_in_epoch = b
            t.save_checkpoint(self.store)
            where = f" (checkpoint in {self.store.folder})" if self.store else ""
            raise TrainingStopped(
                f"the loss became {loss} at epoch {t.epoch + 1}, step {t.step + 1}; the "
                f"weights of the last good step are kept{where}; lower the learning rate or "
                "check the data")
        self.last_good = t.backend.snapshot()
        t.backend.step(self.lr)
        t.refresh_weight_scales()
        t.step += 1
        t.history.batch_loss.append(loss)
        totals[:2] += (loss * len(idx), len(idx))
        c = t.loss.correct(out, self.labels[idx])
        if c is not None:
            totals[2:] += c
