"""The fake quantizer of the training graph as one autograd step for the torch backend.

`fake_quant.lower_to_fake_quant` writes each integer Q->DQ pair as five nodes,
Div(x, s) -> Add(M) -> Sub(M) -> Clip(lo, hi) -> Mul(s). Run one by one, autograd keeps two
activation-sized tensors per quantizer for the backward pass and makes five passes each way.
`FakeQuant` computes the same five float32 operations in the same order (the forward pass
is bit-identical) and keeps one boolean mask; its backward pass is the chain rule of those
five ops (straight through inside [lo, hi], zero outside; the scale's gradient when it is
trained), equal to autograd's to float32 rounding (tests/finetune/test_torch_ops.py)."""

from __future__ import annotations

import onnx
import torch

STAGES = ("Div", "Add", "Sub", "Clip", "Mul")


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return t.sum_to_size(shape) if t.shape != shape else t


class FakeQuant(torch.autograd.Function):
    """y = Clip(x / s + M - M, lo, hi) * s."""

    @staticmethod
    def forward(ctx, x, s, rounder, lo, hi):
        v = x / s
        r = (v + rounder) - rounder
        mask = (r >= lo) & (r <= hi)
        ctx.save_for_backward(x, s, mask, lo, hi)
        ctx.mark_non_differentiable(mask)
        return torch.clamp(r, lo, hi) * s

    @staticmethod
    def backward(ctx, g):
        x, s, mask, lo, hi = ctx.saved_tensors
        gr = torch.where(mask, g * s, torch.zeros((), dtype=g.dtype, device=g.device))
        gs = None
        if ctx.needs_input_grad[1]:  # a learned scale: Mul's and Div's terms
            v = x / s
            c = torch.clamp(torch.round(v), lo, hi)  # what +M-M and Clip gave (half to even)
            gs = _sum_to(g * c, s.shape) - _sum_to(gr * v / s, s.shape)
        return gr / s, gs, None, None, None


def quantizer_chains(nodes: list[onnx.NodeProto], readers: dict[str, int]
                     ) -> dict[int, list[int]]:
    """The quantizers of the training graph, by the position of their Mul: the positions
    of the five stages, each reading the previous one's output (read by nothing else), the
    Div and the Mul sharing the scale, the Add and the Sub sharing the rounder."""
    by_input: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        if n.input:
            by_input.setdefault(n.input[0], []).append(k)
    chains = {}
    for k, div in enumerate(nodes):
        if div.op_type != STAGES[0] or len(div.input) != 2:
            continue
        chain = [k]
        for stage in STAGES[1:]:
            out = nodes[chain[-1]].output[0]
            nxt = [j for j in by_input.get(out, ()) if nodes[j].op_type == stage]
            if readers.get(out, 0) != 1 or len(nxt) != 1:
                break
            chain.append(nxt[0])
        if len(chain) < 5:
            continue
        _, add, sub, clip, mul = (nodes[j] for j in chain)
        if (add.input[1] == sub.input[1] and div.input[1] == mul.input[1]
                and len(clip.input) == 3 and all(clip.input[1:])
                and mul.input[0] == clip.output[0]):
            chains[chain[-1]] = chain
    return chains
