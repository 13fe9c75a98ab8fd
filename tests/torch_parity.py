"""Shared checks of the torch backend against onnxruntime: node by node on the same graph
(every node fed onnxruntime's own inputs, so each op is compared on its own, free of the
rounding cascades a fake-quant graph amplifies), and step by step against the
onnxruntime-training backend."""

from __future__ import annotations

import numpy as np
import onnx

TOL = 1e-4  # relative to the tensor's largest magnitude: float32 summation-order noise


def node_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict:
    """Every node output of `model` as onnxruntime computes it without graph optimizations."""
    import onnxruntime as ort

    names = [o for n in model.graph.node for o in n.output if o]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(None, feeds)))


def node_by_node(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[str]:
    """Mismatches of the torch op table against onnxruntime, node by node."""
    import torch

    from qdq_onnx.files.onnx_files import default_opset
    from qdq_onnx.finetune.backend.torch_graph import GraphRunner

    ref = node_outputs(model, feeds)
    runner = GraphRunner(model.graph, default_opset(model), torch.device("cpu"), {})
    values = {**runner.constants, **{k: torch.from_numpy(v) for k, v in feeds.items()}}
    values.update({k: torch.from_numpy(np.array(v)) for k, v in ref.items()})
    runner.env = values  # what a Loop/If body reads from the outer scope
    bad = []
    for node in runner.nodes:
        args = [values[n] if n else None for n in node.inputs]
        got = node.fn(node.ctx, node.attrs, *args)
        got = got if isinstance(got, tuple) else (got,)
        for name, value in zip(node.outputs, got):
            if not name:
                continue
            want, have = ref[name], value.detach().numpy()
            if want.shape != have.shape or want.dtype != have.dtype:
                bad.append(f"{node.proto.name} ({node.proto.op_type}) {name}: "
                           f"{have.dtype}{list(have.shape)} != {want.dtype}{list(want.shape)}")
            elif want.dtype.kind == "f":
                scale = float(np.abs(want).max()) if want.size else 0.0
                err = float(np.abs(want - have).max()) if want.size else 0.0
                if err > TOL * scale + 1e-6:
                    bad.append(f"{node.proto.name} ({node.proto.op_type}) {name}: error "
                               f"{err:.3g} of {scale:.3g}")
            elif not np.array_equal(want, have):
                bad.append(f"{node.proto.name} ({node.proto.op_type}) {name}: values differ")
    return bad


def two_steps(model, x, y, backend, config, teacher=None, lr=1e-3):
    """Loss and gradients (by parameter name) of two steps from the same start."""
    from qdq_onnx.finetune import TrainConfig, Trainer

    t = Trainer(model, TrainConfig(backend=backend, **config), teacher=teacher)
    try:
        feeds, targets = t._labelled(x, y, "parity")
        n = len(next(iter(feeds.values())))
        args = t.args(feeds, slice(0, n), targets)
        out = []
        for _ in range(2):
            loss, _ = t.backend.forward_backward(args)
            names = list(t.graph.trainable)
            grads = [np.array(g, copy=True) for g in t.backend.gradients(names)]
            out.append((loss, dict(zip(names, grads))))
            t.backend.step(lr)
            t.refresh_weight_scales()
        return out
    finally:
        t.close()


def differences(a, b) -> tuple[float, float, float]:
    """Over both steps: the loss's relative difference, the whole gradient's relative L2
    difference, and the largest difference of a tensor relative to its largest component."""
    loss = grad = tensor = 0.0
    for (la, ga), (lb, gb) in zip(a, b):
        loss = max(loss, abs(la - lb) / abs(la))
        common = [n for n in ga if n in gb]
        assert len(common) >= 0.9 * len(ga)  # rewrites may rename a few (ConvTranspose)
        va = np.concatenate([ga[n].ravel() for n in common])
        vb = np.concatenate([gb[n].ravel() for n in common])
        grad = max(grad, float(np.linalg.norm(va - vb) / np.linalg.norm(va)))
        for n in common:
            top = float(np.abs(ga[n]).max())
            if top > 0:
                tensor = max(tensor, float(np.abs(ga[n] - gb[n]).max()) / top)
    return loss, grad, tensor
