"""Quantization-aware fine-tuning in onnxruntime-training: artifacts, the training loop,
checkpoints with resume, and the emitted TensorRT Q/DQ model."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.fake_quant import TrainGraph, lower_to_fake_quant
from qdq_onnx.finetune.losses import LossSpec
from qdq_onnx.finetune.schedules import SCHEDULES, learning_rate
from qdq_onnx.progress import progress
from qdq_onnx.quantize.scales import MIN_SCALE, weight_scale

OPTIMIZERS = ("adam", "adamw", "sgd")
LATEST = "latest.json"


class TrainingStopped(QdqError):
    """Training stopped on a NaN/Inf loss; the last good weights were kept."""


@dataclass
class TrainConfig:
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "sparse_categorical_crossentropy"
    from_logits: bool = True
    metrics: tuple[str, ...] = ("accuracy",)
    weight_decay: float = 0.01  # AdamW only; "adam" means 0
    schedule: str = "constant"
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    learn_scales: bool = False
    weight_bits: int = 8
    seed: int = 0
    device: str = "cpu"  # "cuda" with the onnxruntime-training CUDA build

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise QdqError(f"unknown optimizer {self.optimizer!r}; use one of "
                           f"{', '.join(OPTIMIZERS)}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
                and math.isfinite(self.learning_rate)):
            raise QdqError(f"learning rate must be a positive number, got "
                           f"{self.learning_rate!r}")
        if self.schedule not in SCHEDULES:
            raise QdqError(f"unknown schedule {self.schedule!r}; use one of "
                           f"{', '.join(SCHEDULES)}")
        if self.weight_decay < 0:
            raise QdqError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 2 <= self.weight_bits <= 8:
            raise QdqError(f"weight_bits must be 2-8, got {self.weight_bits}")
        unknown = [m for m in self.metrics if m not in ("accuracy", "acc")]
        if unknown:
            raise QdqError(f"unknown metric(s) {unknown}; supported: accuracy")
        LossSpec(self.loss, self.from_logits).kind  # noqa: B018 - validates the name

    def fingerprint_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        d.pop("device")
        return d


@dataclass
class History:
    """Keras-like: `history.history["loss"]` per epoch, plus why training stopped."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)  # every optimizer step's loss
    steps: int = 0
    stopped: str = "completed"  # completed | early_stopping | interrupted

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)


class Interrupt:
    """First Ctrl-C (or SIGTERM) asks to stop at the next step boundary; a second Ctrl-C
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _quiet_ort() -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


class Trainer:
    """Fine-tunes the fake-quant lowering of a Q/DQ model and emits the trained Q/DQ model."""

    def __init__(self, qdq_model: onnx.ModelProto, config: TrainConfig,
                 work_dir: str | os.PathLike | None = None) -> None:
        config.validate()
        self.config = config
        self.qdq_model = qdq_model
        self.loss = LossSpec(config.loss, config.from_logits)
        self.graph: TrainGraph = lower_to_fake_quant(qdq_model, config.weight_bits,
                                                     config.learn_scales)
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="qdq-onnx-train-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = self._fingerprint()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history = History()
        self._build()

    # -- set-up ----------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        g = self.graph.model.graph
        for node in g.node:
            h.update(f"{node.op_type}|{','.join(node.input)}|{','.join(node.output)}\n".encode())
        for t in g.initializer:
            h.update(f"{t.name}:{list(t.dims)}\n".encode())
        for t in self.qdq_model.graph.initializer:  # the starting weights, not just shapes
            h.update(t.SerializeToString())
        h.update(json.dumps({k: v for k, v in self.config.fingerprint_fields().items()
                             if k in ("loss", "from_logits", "optimizer", "weight_decay",
                                      "learn_scales", "weight_bits")},
                            sort_keys=True).encode())
        return h.hexdigest()[:20]

    def _build(self) -> None:
        from qdq_onnx.finetune.backend import ort_imports as ort_training

        _quiet_ort()
        art = ort_training.artifacts()
        block = ort_training.onnxblock()
        base = self.graph.model
        output = self.graph.output
        out_info = next(o for o in base.graph.output if o.name == output)
        self.output_shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                                  for d in out_info.type.tensor_type.shape.dim)
        loss_input = self.loss.add_loss_input(base, output)
        adir = self.work_dir / "artifacts"
        adir.mkdir(exist_ok=True)
        if self.config.optimizer == "sgd":
            optim = block.optim.SGD()
        else:
            wd = 0.0 if self.config.optimizer == "adam" else self.config.weight_decay
            optim = block.optim.AdamW(weight_decay=wd)
        try:
            with ort_training.captured_stderr():
                art.generate_artifacts(
                    base, requires_grad=self.graph.trainable, frozen_params=self.graph.frozen,
                    loss=self.loss.block(block), optimizer=optim,
                    artifact_directory=str(adir), additional_output_names=[output],
                    loss_input_names=[loss_input])
        except Exception as exc:  # gradient building errors come as bare RuntimeErrors
            first = str(exc).strip().splitlines()[-1][:300]
            raise QdqError(f"onnxruntime-training cannot build the training graph: {first}"
                           ) from exc
        self._artifacts = adir
        self._load_state(adir / "checkpoint")

    def _load_state(self, checkpoint: Path) -> None:
        from qdq_onnx.finetune.backend import ort_imports as ort_training

        api = ort_training.api()
        self.state = api.CheckpointState.load_checkpoint(str(checkpoint))
        try:
            self.module = api.Module(str(self._artifacts / "training_model.onnx"), self.state,
                                     str(self._artifacts / "eval_model.onnx"),
                                     device=self.config.device)
        except Exception as exc:
            if self.config.device == "cpu":
                raise
            raise QdqError(f"cannot train on device {self.config.device!r}: {exc} (the GPU "
                           "needs the CUDA build: pip install onnxruntime-training==1.19.2 "
                           "in place of onnxruntime-training-cpu)") from None
        self.optimizer = api.Optimizer(str(self._artifacts / "optimizer_model.onnx"),
                                       self.module)
        self.input_names = [n for n in self.module.input_names()]
        self.refresh_weight_scales()

    # -- parameters --------------------------------------------------------------------------
    def refresh_weight_scales(self) -> None:
        """Weight scales follow the weights: per channel max|w| / qmax, after every step."""
        params = self.state.parameters
        for wq in self.graph.weights:
            params[wq.train_scale].data = weight_scale(params[wq.weight].data, wq.axis,
                                                       wq.qmax)
        if self.config.learn_scales:
            for name in self.graph.activation_scales:
                v = params[name].data
                if np.any(v < MIN_SCALE):
                    params[name].data = np.maximum(v, MIN_SCALE).astype(np.float32)

    def _snapshot(self) -> np.ndarray:
        return self.module.get_contiguous_parameters(trainable_only=True).numpy().copy()

    def _restore(self, snapshot: np.ndarray) -> None:
        from onnxruntime import OrtValue

        self.module.copy_buffer_to_parameters(OrtValue.ortvalue_from_numpy(snapshot)._ortvalue,
                                              trainable_only=True)
        self.refresh_weight_scales()

    # -- data --------------------------------------------------------------------------------
    def _inputs(self, x: Any) -> dict[str, np.ndarray]:
        from qdq_onnx.data.feeds import match_inputs

        arrays = x if isinstance(x, dict) else {"": np.asarray(x)}
        return match_inputs(dict(arrays), self.qdq_model, source="training data")

    def _feed(self, feeds: dict[str, np.ndarray], idx, labels: np.ndarray) -> list:
        args = []
        label_name = "labels" if self.loss.kind == "ce" else "target"
        for name in self.input_names:
            if name == label_name:
                args.append(labels[idx])
            else:
                args.append(feeds[name][idx])
        return args

    def _dummy_labels(self, n: int) -> np.ndarray:
        if self.loss.kind == "ce":
            return np.zeros(n, np.int64)
        return np.zeros((n, *[max(d, 1) for d in self.output_shape[1:]]), np.float32)

    # -- evaluation --------------------------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        labels = self._dummy_labels(n)
        self.module.eval()
        outs = []
        for start in range(0, n, batch_size):
            idx = slice(start, min(start + batch_size, n))
            outs.append(np.asarray(self.module(*self._feed(feeds, idx, labels))[1]))
        return np.concatenate(outs)

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        labels = self.loss.labels(y, self.output_shape, "evaluation labels")
        if labels.shape[0] != n:
            raise QdqError(f"evaluation data has {n} samples but {labels.shape[0]} labels")
        self.module.eval()
        total_loss, hits, count = 0.0, 0, 0
        for start in range(0, n, batch_size):
            idx = slice(start, min(start + batch_size, n))
            loss, out = self.module(*self._feed(feeds, idx, labels))
            m = idx.stop - idx.start
            total_loss += float(loss) * m
            c = self.loss.correct(np.asarray(out), labels[idx])
            if c is not None:
                hits, count = hits + c[0], count + c[1]
        logs = {"loss": total_loss / n}
        if count and self.config.metrics:
            logs["accuracy"] = hits / count
        return logs

    # -- training ----------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, batch_size: int = 32, epochs: int = 1,
            validation_split: float = 0.0, validation_data: tuple | None = None,
            shuffle: bool = True, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, early_stopping_patience: int | None = None,
            verbose: int = 1, stop_after_steps: int | None = None) -> History:
        """Train; see QuantizedModel.fit. `stop_after_steps` simulates an interruption."""
        if batch_size <= 0 or epochs <= 0:
            raise QdqError("batch_size and epochs must be positive integers")
        if not 0.0 <= validation_split < 1.0:
            raise QdqError(f"validation_split must be in [0, 1), got {validation_split}")
        feeds = self._inputs(x)
        n = next(iter(feeds.values())).shape[0]
        labels = self.loss.labels(y, self.output_shape, "training labels")
        if labels.shape[0] != n:
            raise QdqError(f"training data has {n} samples but {labels.shape[0]} labels")
        val = None
        if validation_data is not None:
            val = validation_data
        elif validation_split > 0:
            cut = n - max(1, int(round(n * validation_split)))
            val = ({k: v[cut:] for k, v in feeds.items()}, np.asarray(y)[cut:])
            feeds = {k: v[:cut] for k, v in feeds.items()}
            labels, n = labels[:cut], cut
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            if resume:
                self._resume(ckpt)
        elif resume:
            raise QdqError("resume needs a checkpoint directory")
        steps_per_epoch = math.ceil(n / batch_size)
        total_steps = steps_per_epoch * epochs
        best = (math.inf, None, 0)  # (monitored value, snapshot, epochs without improvement)
        last_good = self._snapshot()
        with Interrupt() as interrupt:
            while self.epoch < epochs:
                order = (np.random.default_rng(self.config.seed + self.epoch).permutation(n)
                         if shuffle else np.arange(n))
                self.module.train()
                run_loss, run_hits, run_count, seen = 0.0, 0, 0, 0
                t0 = time.perf_counter()
                with progress(total=steps_per_epoch, desc=f"epoch {self.epoch + 1}/{epochs}",
                              unit="step", enable=verbose > 0) as bar:
                    bar.update(self.batch_in_epoch)
                    for b in range(self.batch_in_epoch, steps_per_epoch):
                        if interrupt.requested or (stop_after_steps is not None
                                                   and self.step >= stop_after_steps):
                            self.batch_in_epoch = b
                            self._save(ckpt)
                            self.history.stopped = "interrupted"
                            self.history.steps = self.step
                            return self.history
                        idx = order[b * batch_size:(b + 1) * batch_size]
                        lr = learning_rate(self.config.learning_rate, self.step, total_steps,
                                           self.config.schedule, self.config.warmup_steps,
                                           self.config.step_size, self.config.gamma,
                                           steps_per_epoch)
                        self.optimizer.set_learning_rate(lr)
                        loss, out = self.module(*self._feed(feeds, idx, labels))
                        loss = float(loss)
                        if not math.isfinite(loss):
                            self._restore(last_good)
                            self.batch_in_epoch = b
                            self._save(ckpt)
                            where = f" (checkpoint in {ckpt})" if ckpt else ""
                            raise TrainingStopped(
                                f"the loss became {loss} at epoch {self.epoch + 1}, step "
                                f"{self.step + 1}; the weights of the last good step are kept"
                                f"{where}; lower the learning rate or check the data")
                        last_good = self._snapshot()
                        self.optimizer.step()
                        self.module.lazy_reset_grad()
                        self.refresh_weight_scales()
                        self.step += 1
                        self.history.batch_loss.append(loss)
                        m = len(idx)
                        run_loss, seen = run_loss + loss * m, seen + m
                        c = self.loss.correct(np.asarray(out), labels[idx])
                        if c is not None:
                            run_hits, run_count = run_hits + c[0], run_count + c[1]
                        post = {"loss": f"{run_loss / seen:.4f}"}
                        if run_count:
                            post["acc"] = f"{run_hits / run_count:.4f}"
                        bar.set_postfix(post)
                        bar.update(1)
                logs = {"loss": run_loss / max(seen, 1)}
                if run_count and self.config.metrics:
                    logs["accuracy"] = run_hits / run_count
                logs["lr"] = lr if steps_per_epoch else self.config.learning_rate
                if val is not None:
                    for k, v in self.evaluate(val[0], val[1], batch_size=max(batch_size, 256)
                                              ).items():
                        logs[f"val_{k}"] = v
                self.history.append(self.epoch, logs)
                if verbose:
                    text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
                    print(f"epoch {self.epoch + 1}/{epochs} - {time.perf_counter() - t0:.1f}s"
                          f" - {text}", flush=True)
                self.epoch += 1
                self.batch_in_epoch = 0
                self._save(ckpt)
                if early_stopping_patience is not None:
                    monitored = logs.get("val_loss", logs["loss"])
                    if monitored < best[0]:
                        best = (monitored, self._snapshot(), 0)
                    else:
                        best = (best[0], best[1], best[2] + 1)
                        if best[2] >= early_stopping_patience:
                            self._restore(best[1])
                            self.history.stopped = "early_stopping"
                            break
        self.history.steps = self.step
        return self.history

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, ckpt: Path | None) -> None:
        """Checkpoint (weights + optimizer state) and loop position, both atomically."""
        if ckpt is None:
            return
        from qdq_onnx.files.atomic import write_text_atomic
        from qdq_onnx.finetune.backend import ort_imports as ort_training

        api = ort_training.api()
        name = f"ckpt-step{self.step:07d}"
        tmp = ckpt / f".{name}.tmp"
        api.CheckpointState.save_checkpoint(self.state, str(tmp), include_optimizer_state=True)
        os.replace(tmp, ckpt / name)
        info = {"checkpoint": name, "fingerprint": self.fingerprint, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "history": {"history": self.history.history, "epoch": self.history.epoch,
                            "batch_loss": self.history.batch_loss},
                "config": self.config.fingerprint_fields()}
        write_text_atomic(ckpt / LATEST, json.dumps(info, indent=1) + "\n")
        for old in ckpt.glob("ckpt-step*"):
            if old.name != name:
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def _resume(self, ckpt: Path) -> None:
        latest = ckpt / LATEST
        if not latest.is_file():
            raise QdqError(f"{ckpt}: no checkpoint to resume from ({LATEST} is missing)")
        try:
            info = json.loads(latest.read_text())
        except json.JSONDecodeError as exc:
            raise QdqError(f"{latest}: unreadable ({exc})") from None
        if info.get("fingerprint") != self.fingerprint:
            raise QdqError(f"{ckpt}: the checkpoint belongs to another model or training "
                           "configuration (fingerprint mismatch); use a new --checkpoint-dir "
                           "or the original model and settings")
        path = ckpt / info["checkpoint"]
        if not path.exists():
            raise QdqError(f"{path}: checkpoint file is missing")
        self._load_state(path)
        self.epoch, self.step = int(info["epoch"]), int(info["step"])
        self.batch_in_epoch = int(info["batch_in_epoch"])
        self.history = History(history=info["history"]["history"],
                               epoch=info["history"]["epoch"],
                               batch_loss=info["history"].get("batch_loss", []))

    # -- emit --------------------------------------------------------------------------------
    def trained_initializers(self) -> dict[str, np.ndarray]:
        params = self.state.parameters
        return {name: params[name].data for name in self.graph.trainable}

    def emit(self, sample: Any | None = None, provenance: dict[str, Any] | None = None
             ) -> onnx.ModelProto:
        """The trained Q/DQ model for TensorRT, checked against the training graph's eval
        output on `sample` (bit-exact or within 1e-6, else QdqError)."""
        from qdq_onnx.files.metadata import TRAINING_KEY, set_metadata

        out = onnx.ModelProto()
        out.CopyFrom(self.qdq_model)
        values = self.trained_initializers()
        for wq in self.graph.weights:  # reshaped below to the Q/DQ scale's own shape
            values[wq.scale] = weight_scale(values[wq.weight], wq.axis, wq.qmax)
        for t in out.graph.initializer:
            if t.name in values:
                v = np.asarray(values[t.name], dtype=np.float32).reshape(tuple(t.dims))
                t.CopyFrom(numpy_helper.from_array(v, t.name))
        set_metadata(out, TRAINING_KEY, json.dumps({
            **self.config.fingerprint_fields(), "steps": self.step, "epochs": self.epoch,
            **(provenance or {})}, sort_keys=True))
        if sample is not None:
            self.check_emitted(out, sample)
        return out

    def fake_quant_model(self) -> onnx.ModelProto:
        """The training graph's forward pass with the current parameters, as a plain model."""
        model = onnx.ModelProto()
        model.CopyFrom(self.graph.model)
        params = self.state.parameters
        for t in model.graph.initializer:
            if t.name in params:
                t.CopyFrom(numpy_helper.from_array(params[t.name].data, t.name))
        return model

    def check_emitted(self, emitted: onnx.ModelProto, sample: Any) -> float:
        """Max |emitted - training graph| on `sample`, both run op for op (no fusions);
        raises QdqError above 1e-6 (relative to the output's magnitude)."""
        from qdq_onnx.graph.sessions import inference_session

        feeds = self._inputs(sample)
        output = self.graph.output
        expected = inference_session(self.fake_quant_model(),
                                     optimize=False).run([output], feeds)[0]
        got = inference_session(emitted, optimize=False).run(
            [output], feeds)[0]
        diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
        tol = 1e-6 * max(1.0, float(np.max(np.abs(expected))))
        if diff > tol:
            raise QdqError(f"the emitted Q/DQ model differs from the training graph by "
                           f"{diff:.3g} (> {tol:.3g}) on the check batch; not writing it")
        return diff

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
