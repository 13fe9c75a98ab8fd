"""The torch backend's op table, part 4: recurrences (LSTM, GRU) and control flow (Loop,
If), unrolled in Python so autograd differentiates them: what onnxruntime-training 1.19
cannot (it has no gradient for Loop/If, and tf2onnx 1.17 writes a Keras 3 GRU as a Loop)."""

from __future__ import annotations

import torch

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.backend.torch_ops import aligned, ints, op

_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def _activations(attrs, defaults: list[str], directions: int) -> list:
    names = [a.lower() for a in attrs.get("activations", [])] or defaults * directions
    try:
        return [_ACT[n] for n in names]
    except KeyError as exc:
        raise QdqError(f"recurrent activation {exc.args[0]!r} is not supported by the torch "
                       "backend (sigmoid, tanh, relu)") from exc


def _sequence(attrs, x):
    """X as [seq, batch, input] (layout 1 is batch-major)."""
    return x.transpose(0, 1) if attrs.get("layout", 0) else x


def _steps(seq: int, reverse: bool) -> range:
    return range(seq - 1, -1, -1) if reverse else range(seq)


def _directions(attrs) -> list[bool]:
    direction = attrs.get("direction", "forward")
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _outputs(attrs, ys: list, finals: list[list]):
    """Y [seq, dirs, batch, hidden] (batch-major for layout 1) and the final states."""
    y = torch.stack(ys, dim=1)
    states = [torch.stack(s, dim=0) for s in finals]
    if attrs.get("layout", 0):
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return (y, *states)


def _lengths_mask(lens, seq: int, batch: int, device) -> list | None:
    if lens is None:
        return None
    lens = lens.to(device)
    return [(t < lens).reshape(batch, 1) for t in range(seq)]


@op("LSTM")
def lstm(ctx, attrs, x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
    x, w, r, b, h0, c0, p = aligned(x, w, r, b, h0, c0, p)
    x = _sequence(attrs, x)
    seq, batch = x.shape[0], x.shape[1]
    hidden = r.shape[-1]
    dirs = _directions(attrs)
    acts = _activations(attrs, ["sigmoid", "tanh", "tanh"], len(dirs))
    clip = attrs.get("clip")
    mask = _lengths_mask(lens, seq, batch, x.device)
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(dirs):
        f, g, h_act = acts[3 * d: 3 * d + 3]
        bias = 0 if b is None else b[d, :4 * hidden] + b[d, 4 * hidden:]
        h = x.new_zeros(batch, hidden) if h0 is None else h0[d]
        c = x.new_zeros(batch, hidden) if c0 is None else c0[d]
        pi, po, pf = ((None,) * 3 if p is None else p[d].split(hidden))
        out = [None] * seq
        projected = torch.matmul(x, w[d].t()) + bias  # [seq, batch, 4H]
        for t in _steps(seq, reverse):
            gates = projected[t] + h @ r[d].t()
            if clip is not None:
                gates = gates.clamp(-clip, clip)
            i, o, fg, cand = gates.split(hidden, dim=-1)  # ONNX gate order: i, o, f, c
            i = f(i if pi is None else i + pi * c)
            fg = f(fg if pf is None else fg + pf * c)
            if attrs.get("input_forget", 0):
                fg = 1 - i
            c_new = fg * c + i * g(cand)
            o = f(o if po is None else o + po * c_new)
            h_new = o * h_act(c_new)
            if mask is not None:
                h_new = torch.where(mask[t], h_new, h)
                c_new = torch.where(mask[t], c_new, c)
                out[t] = torch.where(mask[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h, c = h_new, c_new
        ys.append(torch.stack(out, dim=0))
        hs.append(h)
        cs.append(c)
    return _outputs(attrs, ys, [hs, cs])


@op("GRU")
def gru(ctx, attrs, x, w, r, b=None, lens=None, h0=None):
    x, w, r, b, h0 = aligned(x, w, r, b, h0)
    x = _sequence(attrs, x)
    seq, batch = x.shape[0], x.shape[1]
    hidden = r.shape[-1]
    dirs = _directions(attrs)
    acts = _activations(attrs, ["sigmoid", "tanh"], len(dirs))
    before_reset = attrs.get("linear_before_reset", 0)
    mask = _lengths_mask(lens, seq, batch, x.device)
    ys, hs = [], []
    for d, reverse in enumerate(dirs):
        f, g = acts[2 * d: 2 * d + 2]
        wb = 0 if b is None else b[d, :3 * hidden]
        rb = x.new_zeros(3 * hidden) if b is None else b[d, 3 * hidden:]
        rz, rr, rh = r[d].split(hidden)
        rbz, rbr, rbh = rb.split(hidden)
        h = x.new_zeros(batch, hidden) if h0 is None else h0[d]
        projected = torch.matmul(x, w[d].t()) + wb  # [seq, batch, 3H]: z, r, h
        out = [None] * seq
        for t in _steps(seq, reverse):
            xz, xr, xh = projected[t].split(hidden, dim=-1)
            z = f(xz + h @ rz.t() + rbz)
            rt = f(xr + h @ rr.t() + rbr)
            if before_reset:
                cand = g(xh + rt * (h @ rh.t() + rbh))
            else:
                cand = g(xh + (rt * h) @ rh.t() + rbh)
            h_new = (1 - z) * cand + z * h
            if mask is not None:
                h_new = torch.where(mask[t], h_new, h)
                out[t] = torch.where(mask[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h = h_new
        ys.append(torch.stack(out, dim=0))
        hs.append(h)
    return _outputs(attrs, ys, [hs])


@op("Loop")
def loop(ctx, attrs, trip=None, cond=None, *carried):
    body = attrs["body"]
    limit = ints(trip)[0] if trip is not None else None
    go = True if cond is None else bool(cond.reshape(()).item())
    state = list(carried)
    n_carried = len(state)
    scans: list[list] = []
    i = 0
    while go and (limit is None or i < limit):
        outs = ctx.run_body(body, [torch.tensor(i, dtype=torch.int64),
                                   torch.tensor(go) if cond is None else cond.new_tensor(go),
                                   *state])
        go = bool(outs[0].reshape(()).item())
        state = list(outs[1:1 + n_carried])
        per_step = outs[1 + n_carried:]
        if not scans:
            scans = [[] for _ in per_step]
        for acc, value in zip(scans, per_step):
            acc.append(value)
        i += 1
    stacked = [torch.stack(acc, dim=0) for acc in scans]
    if not stacked and i == 0:
        n_scan = len(body.output) - 1 - n_carried
        stacked = [torch.zeros(0) for _ in range(n_scan)]
    return tuple(state + stacked)


@op("If")
def if_(ctx, attrs, cond):
    branch = attrs["then_branch"] if bool(cond.reshape(()).item()) else attrs["else_branch"]
    outs = ctx.run_body(branch, [])
    return tuple(outs) if len(outs) != 1 else outs[0]
