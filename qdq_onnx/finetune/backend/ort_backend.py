"""onnxruntime-training as the training backend: offline artifacts (training, eval and
optimizer graphs plus a checkpoint), then Module/Optimizer/CheckpointState steps."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend import ort_imports
from qdq_onnx.finetune.coverage import require_trainable_ops, untrainable
from qdq_onnx.finetune.fake_quant import TrainGraph
from qdq_onnx.finetune.objective import Objective
from qdq_onnx.graph import ops
from qdq_onnx.progress import captured_stderr


def refuse_control_flow(graph: TrainGraph) -> None:
    """QdqError for a Loop/If/Scan: onnxruntime-training 1.19 has no gradient for control
    flow and aborts the whole process (SIGABRT) while building one, so it is refused first."""
    for node in graph.model.graph.node:
        if node.op_type in ops.CONTROL_FLOW_OPS:
            why = (" (tf2onnx 1.17 writes a Keras 3 GRU as a Loop, not as ONNX GRU)"
                   if node.op_type == "Loop" else "")
            raise QdqError(f"{node.name}: a model with {node.op_type}{why} cannot be "
                           "fine-tuned: onnxruntime-training 1.19 has no gradient for "
                           "control flow (it aborts the process building one); insert and "
                           "calibrate work")


_NO_BUILDER = re.compile(r"gradient builder has not been registered: (\w+) for node (\S+)")
_NO_KERNEL = re.compile(r"implementation for (\w+?)Grad\(\d+\) node with name '([^']*)'")
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)")
_CPP = re.compile(r"(\S+\.(cc|h):\d+ )?(\S+::)+\S*\([^)]*\)( const)? ")


def engine_failure(exc: BaseException, doing: str) -> QdqError:
    """onnxruntime-training's error as one line: the op it cannot differentiate and its
    node when it says so, the node whose gradient failed, else its message; never the C++
    signature in front of it."""
    text = " ".join(str(exc).split())
    found = _NO_BUILDER.search(text)
    if found:
        return untrainable(found.group(1), found.group(2), "no gradient builder")
    found = _NO_KERNEL.search(text)
    if found:
        node = found.group(2).split("_Grad/")[0]
        return untrainable(found.group(1), node, "no CPU kernel for its gradient")
    found = _NODE.search(text)
    if found:
        op, node, message = found.groups()
        message = _CPP.sub("", message.split(" Status Message: ")[-1]).strip()
        if "_Grad/" in node:
            return QdqError(f"onnxruntime-training cannot {doing}: the gradient of node "
                            f"{node.split('_Grad/')[0]!r} fails ({op}: {message[:240]})")
        return QdqError(f"onnxruntime-training cannot {doing}: node {node!r} ({op}) fails: "
                        f"{message[:240]}")
    message = re.sub(r"^.*\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return QdqError(f"onnxruntime-training cannot {doing}: {_CPP.sub('', message)[:300]}")


def _quiet_ort() -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


class OrtTrainingBackend:
    """Builds the artifacts of `graph` in a work folder (removed by `close` when it made
    one) and trains its trainable parameters."""

    def __init__(self, graph: TrainGraph, objective: Objective, optimizer: str,
                 weight_decay: float,
                 device: str = "cpu", work_dir: str | Path | None = None) -> None:
        refuse_control_flow(graph)
        require_trainable_ops(graph.model, graph.trainable, graph.outputs)
        self.device = device
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="qdq-onnx-train-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._artifacts = self.work_dir / "artifacts"
        self._artifacts.mkdir(exist_ok=True)
        _quiet_ort()
        self._generate(graph, objective, optimizer, weight_decay)
        self.load_checkpoint(self._artifacts / "checkpoint")

    def _generate(self, graph: TrainGraph, objective: Objective, optimizer: str,
                  weight_decay: float) -> None:
        art, block = ort_imports.artifacts(), ort_imports.onnxblock()
        loss_inputs = objective.add_loss_inputs(graph.model)
        if optimizer == "sgd":
            optim = block.optim.SGD()
        else:
            optim = block.optim.AdamW(weight_decay=0.0 if optimizer == "adam" else weight_decay)
        try:
            with captured_stderr():
                art.generate_artifacts(
                    graph.model, requires_grad=graph.trainable, frozen_params=graph.frozen,
                    loss=objective.block(block), optimizer=optim,
                    artifact_directory=str(self._artifacts),
                    additional_output_names=graph.outputs, loss_input_names=loss_inputs)
        except Exception as exc:  # gradient building errors come as bare RuntimeErrors
            raise engine_failure(exc, "build the training graph") from exc
        self._readable_optimizer()

    def _readable_optimizer(self) -> None:
        """generate_artifacts writes the optimizer graph at the installed onnx's IR version,
        which onnxruntime-training 1.19 refuses above 10: lower it to what it reads."""
        import onnx

        from qdq_onnx.files.runtime import readable_ir_version

        path = self._artifacts / "optimizer_model.onnx"
        model = onnx.load(str(path))
        readable = readable_ir_version(model.ir_version)
        if readable != model.ir_version:
            model.ir_version = readable
            onnx.save(model, str(path))

    # -- state ---------------------------------------------------------------------------
    def load_checkpoint(self, path: Path) -> None:
        import onnxruntime

        from qdq_onnx.parallel.world import threads_per_rank

        api = ort_imports.api()
        self.state = api.CheckpointState.load_checkpoint(str(path))
        options = onnxruntime.SessionOptions()
        threads = threads_per_rank()
        if threads:  # ranks sharing a machine share its cores
            options.intra_op_num_threads = threads
        try:
            self.module = api.Module(str(self._artifacts / "training_model.onnx"), self.state,
                                     str(self._artifacts / "eval_model.onnx"),
                                     device=self.device, session_options=options)
        except Exception as exc:
            if self.device == "cpu":
                raise engine_failure(exc, "load the training graph") from exc
            raise QdqError(f"cannot train on device {self.device!r}: {exc} (the GPU needs the "
                           "CUDA build: pip install onnxruntime-training==1.19.2 in place of "
                           "onnxruntime-training-cpu)") from exc
        self.optimizer = api.Optimizer(str(self._artifacts / "optimizer_model.onnx"),
                                       self.module)
        self.input_names = list(self.module.input_names())

    def save_checkpoint(self, path: Path) -> None:
        ort_imports.api().CheckpointState.save_checkpoint(self.state, str(path),
                                                          include_optimizer_state=True)

    def get_parameter(self, name: str) -> np.ndarray:
        return self.state.parameters[name].data

    def set_parameter(self, name: str, value: np.ndarray) -> None:
        self.state.parameters[name].data = value

    def snapshot(self) -> np.ndarray:
        return self.module.get_contiguous_parameters(trainable_only=True).numpy().copy()

    def restore(self, snapshot: np.ndarray) -> None:
        from onnxruntime import OrtValue

        self.module.copy_buffer_to_parameters(OrtValue.ortvalue_from_numpy(snapshot)._ortvalue,
                                              trainable_only=True)

    def gradients(self, names: list[str]) -> list[np.ndarray]:
        """The gradients of the last `forward_backward` for `names`, as onnxruntime holds
        them (on the CPU, views of its buffers: valid until the next step; copy to keep)."""
        return [self.state.parameters[n].grad for n in names]

    def set_gradients(self, names: list[str], values: list[np.ndarray]) -> None:
        """Overwrite the gradient buffers the next `step` applies (a reduced gradient)."""
        for n, v in zip(names, values):
            self.state.parameters[n]._parameter.grad.update_inplace(
                np.ascontiguousarray(v, dtype=np.float32))

    # -- steps ---------------------------------------------------------------------------
    def forward_backward(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        self.module.train()
        try:
            loss, *outs = self.module(*args)
        except RuntimeError as exc:  # a missing gradient kernel shows at the first step
            raise engine_failure(exc, "run a training step") from exc
        return float(loss), [np.asarray(o) for o in outs]

    def discard_gradients(self) -> None:
        """Forget the last `forward_backward`'s gradients (the next one starts from zero)."""
        self.module.lazy_reset_grad()

    def step(self, learning_rate: float) -> None:
        self.optimizer.set_learning_rate(learning_rate)
        self.optimizer.step()
        self.module.lazy_reset_grad()

    def evaluate(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        self.module.eval()
        try:
            loss, *outs = self.module(*args)
        except RuntimeError as exc:
            raise engine_failure(exc, "evaluate a batch") from exc
        return float(loss), [np.asarray(o) for o in outs]

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
