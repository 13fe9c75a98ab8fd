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
from qdq_onnx.finetune.data_parallel import GradientSync, Reduced
from qdq_onnx.finetune.history import EarlyStopping, History, KeepBest
from qdq_onnx.finetune.interrupt import Interrupt
from qdq_onnx.finetune.schedules import learning_rate
from qdq_onnx.finetune.state import RunState
from qdq_onnx.parallel import shard_rows
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
        # Data parallel: `batch_size` per rank, as under DDP; a step trains the global batch.
        self.world = trainer.run.world
        self.global_batch = fit.batch_size * self.world.size
        self.sync = (GradientSync(trainer.backend, self.world, trainer.graph.trainable)
                     if self.world.size > 1 else None)
        self.steps_per_epoch = self._steps(0)
        self.eval_batch = max(fit.batch_size, 256)
        self.store = (CheckpointStore(fit.checkpoint_dir, trainer.fingerprint,
                                      fit.keep_checkpoints) if fit.checkpoint_dir else None)
        self.policy = CheckpointPolicy(fit.checkpoint_every_steps, fit.checkpoint_every_minutes)
        self.state = self._start_state()
        trainer.state = self.state
        self.last_good = trainer.backend.snapshot()

    def _steps(self, offset: int) -> int:
        """Steps of an epoch whose first `offset` samples are trained already."""
        steps = math.ceil((self.n - offset) / self.global_batch)
        cap = self.fit.steps_per_epoch
        return steps if cap is None else min(steps, cap)

    def _start_state(self) -> RunState:
        """A fresh state (the starting weights scored for keep-best), or the newest
        checkpoint's when resuming."""
        fit, t = self.fit, self.t
        if fit.resume:
            record, arrays = self.store.load(t.backend)
            t.refresh_weight_scales()
            state = RunState.from_record(record, arrays, fit.epochs)
            state.resize(int(record.get("global_batch", self.global_batch)), self.global_batch)
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
        state, t, g = self.state, self.t, self.global_batch
        order = self._order()[state.offset:]
        self.started = time.perf_counter()
        self.epoch_steps = self._steps(state.offset)
        steps = range(state.batch_in_epoch, self.epoch_steps)
        rows = [self._local(order[b * g:(b + 1) * g]) for b in steps]
        with progress(total=self.epoch_steps, desc=f"epoch {state.epoch + 1}/{state.epochs}",
                      unit="step", enable=self.fit.verbose > 0 and self.world.is_root) as bar, \
                Prefetch(lambda rc: t.args(self.feeds, rc[0], self.targets), rows) as ahead:
            bar.update(state.batch_in_epoch)
            for b, (idx, count), args in zip(steps, rows, ahead):
                if self._stopping(interrupt):
                    self.checkpoint()
                    return None
                self._step(b, idx, args, count)
                bar.set_postfix(state.running())
                bar.update(1)
        return state.epoch_logs(bool(t.config.metrics))

    def _local(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """(this rank's rows of one global batch, how many count): a rank left without
        rows by a short last batch trains one placeholder row that counts zero times."""
        if self.sync is None:
            return rows, len(rows)
        mine = shard_rows(rows, self.world.rank, self.world.size)
        return (mine, len(mine)) if len(mine) else (rows[:1], 0)

    def _stopping(self, interrupt: Interrupt) -> bool:
        """A stop (Ctrl-C, SIGTERM, a callback) before the next step, on every rank together."""
        wanted = interrupt.requested or self.state.stop_requested
        if self.sync is None:
            return wanted
        return self.sync.any(wanted, f"the stop check before step {self.state.step + 1}")

    def _step(self, b: int, idx: np.ndarray, args: list, count: int) -> None:
        state, t, cfg = self.state, self.t, self.t.config
        total = self.steps_per_epoch * state.epochs
        state.lr = learning_rate(cfg.learning_rate, state.step, total, cfg.schedule,
                                 cfg.warmup_steps, cfg.step_size, cfg.gamma,
                                 self.steps_per_epoch)
        loss, outs = t.backend.forward_backward(args)
        correct = t.objective.correct(t.outputs_by_name(outs),
                                      {k: v[idx] for k, v in self.targets.items()})
        # the running accuracy of one trained output (validation reports each output's)
        single = next(iter(correct.values())) if len(correct) == 1 \
            and len(t.objective.parts) == 1 else None
        figures = Reduced(loss, len(idx), *(single or (0, 0)))
        if self.sync is not None:
            figures = self.sync.reduce(count, loss, single, state.step)
            loss = figures.loss
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
        state.add_batch(loss, figures.samples, (figures.hits, figures.counted)
                        if single is not None else None)
        for cb in self.callbacks:
            cb.on_step_end(state, loss)
        if self.policy.due(state.step) and state.batch_in_epoch < self.epoch_steps:
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
        if self.store is None or not self.world.is_root:
            return
        record, arrays = self.state.record()
        record["global_batch"] = self.global_batch
        record["config"] = self.t.config.fingerprint_fields()
        folder = self.store.save(self.t.backend, record, arrays)
        self.policy.saved(self.state.step)
        for cb in self.callbacks:
            cb.on_checkpoint(self.state, folder)
