"""PyTorch as the training backend: the same fake-quant training graph (and the same loss
graph) that onnxruntime-training trains, executed op by op with autograd (torch_graph.py),
on the CPU or a CUDA device. The optimizers are onnxruntime-training's, step for step:
AdamW as its AdamWOptimizer kernel computes it (adam_mode 1, the Hugging Face form: bias
correction folded into the learning rate, eps outside the square root, weight decay after
the update; eps 1e-6) and SGD as w - lr * g, so a run continues the same on either backend.
Parameters, gradients and optimizer moments stay on the device between steps; weight
scales follow the weights on the device too."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from qdq_onnx.errors import QdqError
from qdq_onnx.files.onnx_files import default_opset
from qdq_onnx.finetune.backend.torch_imports import torch_module
from qdq_onnx.finetune.fake_quant import TrainGraph, WeightQuant
from qdq_onnx.finetune.loss_graph import append_loss
from qdq_onnx.finetune.objective import Objective

BETAS = (0.9, 0.999)
EPS = 1e-6  # onnxruntime-training's AdamW block default, kept for parity


def torch_device(name: str):
    """The torch device `name` names ("cpu", "cuda", "cuda:1"), checked."""
    torch = torch_module()
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise QdqError(f"unknown device {name!r}: use cpu or cuda[:N]") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise QdqError(f"cannot train on device {name!r}: this torch ({torch.__version__}) "
                       "sees no CUDA device (a CPU build, or no GPU)")
    if device.type not in ("cpu", "cuda"):
        raise QdqError(f"device {name!r}: the torch backend trains on cpu or cuda")
    if device.type == "cuda":
        # float32 means float32: TF32 convolutions and products (cuDNN's default) round
        # their inputs to 10 bits, which moves values across the quantizers' rounding
        # boundaries. No autocast either: a fake-quantized value q * s is not exact in
        # FP16/BF16, so mixed precision would change what the quantizers compute.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


class TorchBackend:
    """Trains the trainable parameters of `graph` with PyTorch autograd."""

    def __init__(self, graph: TrainGraph, objective: Objective, optimizer: str,
                 weight_decay: float, device: str = "cpu",
                 work_dir: str | os.PathLike | None = None) -> None:
        from qdq_onnx.finetune.backend.torch_graph import GraphRunner
        from qdq_onnx.parallel.world import threads_per_rank

        torch = torch_module()
        self.torch = torch
        self.device = torch_device(device)
        threads = threads_per_rank()
        if threads:  # ranks sharing a machine share its cores
            torch.set_num_threads(threads)
        model = copy.deepcopy(graph.model)
        self.loss_name = append_loss(model, objective)
        inits = {t.name: t for t in model.graph.initializer}
        self.trainable = list(graph.trainable)
        self.params = {name: torch.nn.Parameter(torch.from_numpy(
            onnx_array(inits[name])).to(self.device)) for name in self.trainable}
        self.runner = GraphRunner(model.graph, default_opset(model), self.device, self.params)
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.outputs = list(graph.outputs)
        self.optimizer, self.weight_decay = optimizer, float(weight_decay)
        self.step_count = 0
        self.moments = {n: (torch.zeros_like(p), torch.zeros_like(p))
                        for n, p in self.params.items()} if optimizer != "sgd" else {}
        self.work_dir = work_dir

    # -- running ---------------------------------------------------------------------------
    def _feeds(self, args: list[np.ndarray]) -> dict:
        torch = self.torch
        return {name: torch.from_numpy(np.array(a, order="C")).to(self.device,
                                                                   non_blocking=True)
                for name, a in zip(self.input_names, args)}

    def _run(self, args: list[np.ndarray]):
        loss, *outs = self.runner.run(self._feeds(args), [self.loss_name, *self.outputs])
        return loss, outs

    def forward_backward(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        with self.torch.enable_grad():
            loss, outs = self._run(args)
            loss.backward()
        return float(loss.detach()), [o.detach().cpu().numpy() for o in outs]

    def evaluate(self, args: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        with self.torch.no_grad():
            loss, outs = self._run(args)
        return float(loss), [o.cpu().numpy() for o in outs]

    def step(self, learning_rate: float) -> None:
        torch = self.torch
        self.step_count += 1
        with torch.no_grad():
            if self.optimizer == "sgd":
                for p in self.params.values():
                    if p.grad is not None:
                        p.sub_(learning_rate * p.grad)
            else:
                self._adamw(np.float32(learning_rate))
        for p in self.params.values():
            p.grad = None

    def _adamw(self, lr: np.float32) -> None:
        """onnxruntime-training's AdamWOptimizer, adam_mode 1, in float32 like its kernel."""
        b1, b2 = np.float32(BETAS[0]), np.float32(BETAS[1])
        c1 = np.float32(1.0) - np.float32(math.pow(b1, self.step_count))
        c2 = np.float32(1.0) - np.float32(math.pow(b2, self.step_count))
        lr_corrected = float(lr * (np.sqrt(c2) / c1))
        decay = float(lr * np.float32(self.weight_decay))
        for name, p in self.params.items():
            g = p.grad if p.grad is not None else self.torch.zeros_like(p)
            m, v = self.moments[name]
            m.mul_(float(b1)).add_(g, alpha=float(np.float32(1) - b1))
            v.mul_(float(b2)).add_((float(np.float32(1) - b2) * g) * g)
            p.sub_(lr_corrected * m / (v.sqrt() + EPS))
            if decay:
                p.sub_(decay * p)

    # -- parameters ------------------------------------------------------------------------
    def _tensor(self, name: str):
        if name in self.params:
            return self.params[name]
        try:
            return self.runner.constants[name]
        except KeyError as err:
            raise QdqError(f"the training graph has no parameter {name!r}") from err

    def get_parameter(self, name: str) -> np.ndarray:
        return self._tensor(name).detach().cpu().numpy().copy()

    def set_parameter(self, name: str, value: np.ndarray) -> None:
        t = self._tensor(name)
        with self.torch.no_grad():
            t.copy_(self.torch.from_numpy(np.asarray(value, np.float32)).reshape(t.shape))

    def follow_weight_scales(self, weights: list[WeightQuant], floor: float) -> None:
        """Every weight scale recomputed from its weight on the device: max|w| / qmax per
        channel (every axis but the channel axis reduced), floored at `floor`; the same
        float32 division as `quantize.scales.weight_scale`."""
        torch = self.torch
        with torch.no_grad():
            for wq in weights:
                w = self.params.get(wq.weight)
                w = w if w is not None else self.runner.constants[wq.weight]
                axes = [a for a in range(w.dim()) if wq.axis is None or a != wq.axis]
                amax = w.abs().amax(dim=axes, keepdim=True) if axes else w.abs()
                scale = torch.clamp(amax / float(wq.qmax), min=floor)
                target = self._tensor(wq.train_scale)
                target.copy_(scale.reshape(target.shape))

    def floor_parameters(self, names: list[str], floor: float) -> None:
        """Clamp the parameters `names` (learned scales) at `floor`, on the device."""
        with self.torch.no_grad():
            for name in names:
                self._tensor(name).clamp_(min=floor)

    def gradients(self, names: list[str]) -> list[np.ndarray]:
        out = []
        for n in names:
            g = self.params[n].grad
            out.append(np.zeros(tuple(self.params[n].shape), np.float32) if g is None
                       else g.detach().cpu().numpy())
        return out

    def set_gradients(self, names: list[str], values: list[np.ndarray]) -> None:
        torch = self.torch
        for n, v in zip(names, values):
            p = self.params[n]
            p.grad = torch.from_numpy(np.array(v, np.float32, order="C")).to(
                self.device).reshape(p.shape)

    def snapshot(self) -> np.ndarray:
        return np.concatenate([p.detach().cpu().numpy().reshape(-1)
                               for p in self.params.values()]).astype(np.float32)

    def restore(self, snapshot: np.ndarray) -> None:
        offset = 0
        with self.torch.no_grad():
            for p in self.params.values():
                n = p.numel()
                p.copy_(self.torch.from_numpy(snapshot[offset:offset + n]).reshape(p.shape))
                offset += n

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        """Parameters, the frozen float constants, moments and step count: one .npz file
        (no pickle), written to a temporary name and renamed."""
        arrays = {f"param/{n}": self.get_parameter(n) for n in self.params}
        for n, t in self.runner.constants.items():
            if t.is_floating_point():
                arrays[f"const/{n}"] = t.cpu().numpy()
        for n, (m, v) in self.moments.items():
            arrays[f"m/{n}"], arrays[f"v/{n}"] = m.cpu().numpy(), v.cpu().numpy()
        arrays["step"] = np.array(self.step_count, np.int64)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        with np.load(Path(path), allow_pickle=False) as z:
            for key in z.files:
                kind, _, name = key.partition("/")
                if kind in ("param", "const") and (name in self.params
                                                  or name in self.runner.constants):
                    self.set_parameter(name, z[key])
                elif kind in ("m", "v") and name in self.moments:
                    target = self.moments[name][0 if kind == "m" else 1]
                    target.copy_(self.torch.from_numpy(z[key]).reshape(target.shape))
            self.step_count = int(z["step"])

    def close(self) -> None:
        self.params.clear()


def onnx_array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return np.array(numpy_helper.to_array(tensor), np.float32, order="C")  # 0-d stays 0-d
