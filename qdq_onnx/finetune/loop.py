"""The fine-tuning loop of one `fit` call: shuffled batches (prefetched), one optimizer step
each with the weight scales refreshed, checkpoints (periodic, at epoch ends and at an
interruption) with exact resume, validation with keep-best and early stopping, Ctrl-C at
step boundaries, and a stop on a NaN/Inf loss that keeps the last good weights.

The loop owns the run's state (`RunState`); a resumed run reads it back from the newest
checkpoint and continues as the uninterrupted run would, bit for bit."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from qdq_onnx.data.prefetch import Prefetch
from qdq_onnx.errors import TrainingStopped
from qdq_onnx.finetune.callbacks import Callback
from qdq_onnx.finetune.checkpoints import CheckpointPolicy, CheckpointStore
from qdq_onnx.finetune.config import FitConfig
from qdq_onnx.finetune.history import EarlyStopping, History, KeepBest
from qdq_onnx.finetune.interrupt import Interrupt
from qdq_onnx.finetune.schedules import learning_rate
from qdq_onnx.finetune.state import RunState
from qdq_onnx.progress import progress

log = logging.getLogger("qdq_onnx.finetune")


class FitLoop:
    """One call of `Trainer.fit`: the data, the run state, checkpoints and callbacks."""

    def __init__(self, trainer: Any, feeds: dict[str, np.ndarray],
                 targets: dict[str, np.ndarray], val: tuple | None, fit: FitConfig,
                 callbacks: list[Callback]) -> None:
        self.t, self.feeds, self.targets, self.val = trainer, feeds, targets, val
        self.fit, self.callbacks = fit, callbacks
        self.n = next(iter(feeds.values())).shape[0]
        self.steps_per_epoch = math.ceil(self.n / fit.batch_size)
        if fit.steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, fit.steps_per_epoch)
        self.eval_batch = max(fit.batch_size, 256)
        self.store = (CheckpointStore(fit.checkpoint_dir, trainer.fingerprint,
                                      fit.keep_checkpoints) if fit.checkpoint_dir else None)
        self.policy = CheckpointPolicy(fit.checkpoint_every_steps, fit.checkpoint_every_minutes)
        self.state = self._start_state()
        trainer.state = self.state
        self.last_good = trainer.backend.snapshot()

    def _start_state(self) -> RunState:
        """A fresh state (the starting weights scored for keep-best), or the newest
        checkpoint's when resuming."""
        fit, t = self.fit, self.t
        if fit.resume:
            record, arrays = self.store.load(t.backend)
            t.refresh_weight_scales()
            state = RunState.from_record(record, arrays, fit.epochs)
            self.policy.saved(state.step)
            return state
        state = RunState(epochs=fit.epochs)
        if fit.early_stopping_patience is not None:
            state.early = EarlyStopping(fit.early_stopping_patience)
        if fit.keep_best and self.val is not None and fit.early_stopping_patience is None:
            start = {f"val_{k}": v for k, v in self._validate().items()}
            state.keep = KeepBest(start, t.backend.snapshot)
        return state

    def _validate(self) -> dict[str, float]:
        return self.t.evaluate(self.val[0], self.val[1], self.eval_batch)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> History:
        """Train until `fit.epochs` epochs are done, early stopping ends the run, or an
        interruption (Ctrl-C, SIGTERM, a callback's stop request) does."""
        state, history = self.state, self.state.history
        with Interrupt() as interrupt:
            while state.epoch < state.epochs and history.stopped != "early_stopping":
                logs = self._epoch(interrupt)
                if logs is None:
                    history.stopped, history.steps = "interrupted", state.step
                    return history
                self._end_epoch(logs)
        if state.keep is not None and state.epoch > 0:
            history.kept = state.keep.summary(state.epoch - 1)
            if history.kept:
                self.t.restore(state.keep.best)
                log.info(history.kept)
        history.steps = state.step
        return history

    def _order(self) -> np.ndarray:
        if not self.fit.shuffle:
            return np.arange(self.n)
        return np.random.default_rng(self.t.config.seed + self.state.epoch).permutation(self.n)

    def _epoch(self, interrupt: Interrupt) -> dict[str, float] | None:
        """Train the rest of the current epoch; its logs, or None when interrupted."""
        state, t, bs = self.state, self.t, self.fit.batch_size
        order = self._order()
        self.started = time.perf_counter()
        steps = range(state.batch_in_epoch, self.steps_per_epoch)
        rows = [order[b * bs:(b + 1) * bs] for b in steps]
        with progress(total=self.steps_per_epoch, desc=f"epoch {state.epoch + 1}/{state.epochs}",
                      unit="step", enable=self.fit.verbose > 0) as bar, \
                Prefetch(lambda idx: t.args(self.feeds, idx, self.targets), rows) as ahead:
            bar.update(state.batch_in_epoch)
            for b, idx, args in zip(steps, rows, ahead):
                if interrupt.requested or state.stop_requested:
                    self.checkpoint()
                    return None
                self._step(b, idx, args)
                bar.set_postfix(state.running())
                bar.update(1)
        return state.epoch_logs(bool(t.config.metrics))

    def _step(self, b: int, idx: np.ndarray, args: list) -> None:
        state, t, cfg = self.state, self.t, self.t.config
        total = self.steps_per_epoch * state.epochs
        state.lr = learning_rate(cfg.learning_rate, state.step, total, cfg.schedule,
                                 cfg.warmup_steps, cfg.step_size, cfg.gamma,
                                 self.steps_per_epoch)
        loss, outs = t.backend.forward_backward(args)
        if not math.isfinite(loss):
            t.restore(self.last_good)
            self.checkpoint()
            where = f" (checkpoint in {self.store.folder})" if self.store else ""
            raise TrainingStopped(
                f"the loss became {loss} at epoch {state.epoch + 1}, step {state.step + 1}; "
                f"the weights of the last good step are kept{where}; lower the learning rate "
                "or check the data")
        self.last_good = t.backend.snapshot()
        t.backend.step(state.lr)
        t.refresh_weight_scales()
        state.step += 1
        state.batch_in_epoch = b + 1
        state.history.batch_loss.append(loss)
        correct = t.objective.correct(t.outputs_by_name(outs),
                                      {k: v[idx] for k, v in self.targets.items()})
        # the running accuracy of one trained output (validation reports each output's)
        state.add_batch(loss, len(idx), next(iter(correct.values())) if len(correct) == 1
                        and len(t.objective.parts) == 1 else None)
        for cb in self.callbacks:
            cb.on_step_end(state, loss)
        if self.policy.due(state.step) and state.batch_in_epoch < self.steps_per_epoch:
            self.checkpoint()  # an epoch's last step is checkpointed by its end instead

    def _end_epoch(self, logs: dict[str, float]) -> None:
        state, t = self.state, self.t
        if self.val is not None:
            for k, v in self._validate().items():
                logs[f"val_{k}"] = v
        state.history.append(state.epoch, logs)
        log.info("epoch %d/%d: %s", state.epoch + 1, state.epochs, logs)
        if state.keep is not None:
            state.keep.update(state.epoch, logs, t.backend.snapshot)
        stop = state.early is not None and state.early.update(logs, t.backend.snapshot)
        seconds = time.perf_counter() - self.started
        state.next_epoch()
        if stop:
            t.restore(state.early.best)
            state.history.stopped = "early_stopping"
        self.checkpoint()
        for cb in self.callbacks:
            cb.on_epoch_end(state, logs, seconds)

    def checkpoint(self) -> None:
        """Write a checkpoint of the backend and the run state, when checkpointing."""
        if self.store is None:
            return
        record, arrays = self.state.record()
        record["config"] = self.t.config.fingerprint_fields()
        folder = self.store.save(self.t.backend, record, arrays)
        self.policy.saved(self.state.step)
        for cb in self.callbacks:
            cb.on_checkpoint(self.state, folder)
