"""Output-aware refinement of calibrated activation ranges (the rule file's
`scale_refinement`).

A calibration method picks each range from one tensor's histogram; here each INT8
activation range, key by key in graph order, is multiplied by the one of the rule's factors
(or kept) that brings the quantized model's outputs closest to the float model's on the
calibration data: the KL divergence of class-like outputs' probabilities (classes on the
axis `agreement.class_axes` finds; a Softmax output is read as probabilities, a LogSoftmax
as log-probabilities, anything else as logits) plus the noise-to-signal ratio of the other
float outputs, a factor kept only when no more samples (positions) lose the float model's
top class. No labels are read. The clipping search of loss-aware PTQ (Nahshan et al.,
"Loss Aware Post-training Quantization", Machine Learning 2021) with the float model as the
loss.

The quantized model is built once with every refined key's scale as a graph input, so each
evaluation is one onnxruntime pass over the samples (a non-constant scale keeps
onnxruntime's Q/DQ fusions off: the pass computes Q and DQ as written).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.placement.plan import PlacementPlan
from qdq_onnx.placement.rules.model import ScaleRefinementPolicy
from qdq_onnx.progress import progress
from qdq_onnx.quantize.agreement import class_axes
from qdq_onnx.quantize.insert import insert_qdq
from qdq_onnx.quantize.scales import amax_to_scale

log = logging.getLogger("qdq_onnx.scale_refinement")
# A factor is kept only when it lowers the divergence by more than this fraction: ranges
# are not moved for a gain below any measurable effect.
MIN_GAIN = 1e-4
_SCALE_INPUT = "qdq_onnx_refine_scale_{}"


@dataclass
class RefinementResult:
    """What refinement did: the ranges, the factor applied per key (only keys it moved),
    the divergence before and after, the samples and evaluations it used."""

    rule: str
    amax: dict[str, float]
    factors: dict[str, float]
    before: float
    after: float
    samples: int
    evaluations: int
    keys: int
    method: str = ""
    moved: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The plan's record of this run."""
        return {"rule": self.rule, "method": self.method, "samples": self.samples,
                "evaluations": self.evaluations, "keys": self.keys,
                "divergence": {"before": _round(self.before), "after": _round(self.after)},
                "factors": {k: round(v, 4) for k, v in self.factors.items()}}

    def lines(self) -> list[str]:
        spread = (f" (x{min(self.factors.values()):.3g}..x{max(self.factors.values()):.3g})"
                  if self.factors else "")
        return [f"scale refinement: divergence of the outputs from the float model's "
                f"{self.before:.3g} -> {self.after:.3g} on {self.samples} calibration samples; "
                f"{len(self.factors)} of {self.keys} activation range(s) rescaled{spread} in "
                f"{self.evaluations} evaluation(s)"]


def _finite(amax: float) -> bool:
    """Whether `amax` is a finite float32 whose scale is finite too."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(amax)))


def _round(value: float) -> float:
    return float(f"{value:.4g}") if np.isfinite(value) else value


def _output_kinds(model: onnx.ModelProto) -> dict[str, tuple[str, int | None]]:
    """Per float graph output: ("probs" | "logprobs" | "logits", class axis) for class-like
    outputs, ("values", None) for other float outputs; integer outputs are left out."""
    index = GraphIndex(model.graph)
    axes = class_axes(model)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
              onnx.TensorProto.BFLOAT16)
    out = {}
    for vi in model.graph.output:
        elem = vi.type.tensor_type.elem_type
        if elem and elem not in floats:
            continue
        axis = axes.get(vi.name)
        if axis is None:
            out[vi.name] = ("values", None)
            continue
        node = index.producer.get(vi.name)
        while node is not None and node.op_type in ("Identity", "Reshape"):
            node = index.producer.get(node.input[0])
        op = node.op_type if node is not None else ""
        out[vi.name] = ({"Softmax": "probs", "LogSoftmax": "logprobs"}.get(op, "logits"), axis)
    return out


def _log_probs(x: np.ndarray, kind: str, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    if kind == "probs":
        return np.log(np.clip(x, 1e-12, None))
    if kind == "logprobs":
        return x
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


class _Divergence:
    """The float model's outputs on the samples, and how far a quantized pass is from them."""

    def __init__(self, kinds: dict[str, tuple[str, int | None]],
                 reference: list[list[np.ndarray]]):
        self.kinds, self.names = kinds, list(kinds)
        self.ref_logp = [[_log_probs(r, *kinds[n]) if kinds[n][1] is not None else None
                          for n, r in zip(self.names, batch)] for batch in reference]
        self.reference = reference
        self.signal = [sum(float(np.sum(b[i].astype(np.float64) ** 2)) for b in reference)
                       for i in range(len(self.names))]
        self.units = [sum(int(b[i].size // max(1, b[i].shape[kinds[n][1]]))
                          if kinds[n][1] is not None else 0 for b in reference)
                      for i, n in enumerate(self.names)]

    def __call__(self, outputs: list[list[np.ndarray]]) -> tuple[float, int]:
        """(the divergence, the argmax matches of the class-like outputs)."""
        total, matches = 0.0, 0
        for i, name in enumerate(self.names):
            kind, axis = self.kinds[name]
            acc = 0.0
            for b, batch in enumerate(outputs):
                got = np.asarray(batch[i])
                if not np.all(np.isfinite(got)):
                    return float("inf"), 0
                if axis is None:
                    acc += float(np.sum((got.astype(np.float64) - self.reference[b][i]) ** 2))
                else:
                    ref = self.ref_logp[b][i]
                    acc += float(np.sum(np.exp(ref) * (ref - _log_probs(got, kind, axis))))
                    matches += int(np.count_nonzero(np.argmax(ref, axis=axis)
                                                    == np.argmax(got, axis=axis)))
            if axis is None:
                total += acc / self.signal[i] if self.signal[i] > 0 else acc
            else:
                total += acc / max(1, self.units[i])
        return total, matches


def _scale_inputs(qdq: onnx.ModelProto, keys: dict[str, str]) -> dict[str, str]:
    """Rewire `qdq` (in place) so that the scale of every activation pair whose tensor is in
    `keys` (tensor -> scale key) is a scalar graph input; returns key -> input name."""
    inputs: dict[str, str] = {}
    scale_of: dict[str, str] = {}  # scale initializer -> input name
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in keys:
            key = keys[node.input[0]]
            name = inputs.setdefault(key, _SCALE_INPUT.format(len(inputs)))
            scale_of[node.input[1]] = name
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1 \
                and node.input[1] in scale_of:
            node.input[1] = scale_of[node.input[1]]
    kept = [t for t in qdq.graph.initializer if t.name not in scale_of]
    del qdq.graph.initializer[:]
    qdq.graph.initializer.extend(kept)
    for name in inputs.values():
        qdq.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                  []))
    return inputs


def model_macs(model: onnx.ModelProto, data: Any = None) -> int:
    """The weighted ops' multiply-accumulates per sample (`graph.macs`), symbolic sizes
    taken from the data's first sample when there is data (a detector's image size)."""
    from qdq_onnx.graph.macs import data_shapes, layer_costs

    dims = data_shapes(data, model) if data is not None else None
    return sum(c.macs for c in layer_costs(model, input_dims=dims or None).values())


def _tunable(groups: dict[str, list], amax: dict[str, float]) -> list[str]:
    """The activation keys refinement tunes: INT8 (not FP8), with a finite positive range."""
    return [k for k, members in groups.items() if k in amax
            and not members[0].quantization.is_float and _finite(amax[k]) and amax[k] > 0]


def refine_amax(float_model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float],
                feeds: list[dict[str, np.ndarray]], policy: ScaleRefinementPolicy,
                show_progress: bool = True) -> RefinementResult:
    """Refined ranges of the plan's INT8 activation keys on the sample batches `feeds`
    (coordinate descent over `policy.factors`, up to `policy.sweeps` sweeps)."""
    from qdq_onnx.graph.sessions import inference_session, run_checked

    groups = plan.activation_groups()
    schemes = {key: members[0].quantization for key, members in groups.items()}
    tunable = _tunable(groups, amax)
    samples = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    result = RefinementResult(policy.id, dict(amax), {}, 0.0, 0.0, samples, 0, len(tunable))
    kinds = _output_kinds(float_model)
    if not tunable or not kinds:
        return result
    names = list(kinds)
    reference = [run_checked(inference_session(float_model), names, f) for f in feeds]
    divergence = _Divergence(kinds, reference)
    qdq, _ = insert_qdq(float_model, plan, amax)
    inputs = _scale_inputs(qdq, {p.tensor: k for k in tunable for p in groups[k]})
    tunable = [k for k in tunable if k in inputs]
    result.keys = len(tunable)
    session = inference_session(qdq)

    def score(ranges: dict[str, float]) -> tuple[float, int]:
        scales = {inputs[k]: np.asarray(amax_to_scale(np.float32(ranges[k]), schemes[k])[0],
                                        np.float32).reshape(()) for k in tunable}
        return divergence([run_checked(session, names, {**f, **scales}) for f in feeds])

    current = dict(amax)
    best, agree = score(current)
    result.before = best
    total = len(tunable) * len(policy.factors) * policy.sweeps
    with progress(total=total, desc="scale refinement", unit="evaluation",
                  enable=show_progress) as bar:
        for _ in range(policy.sweeps):
            changed = False
            for key in tunable:
                base, pick = current[key], None
                for factor in policy.factors:
                    if not _finite(base * factor):  # a range near float32's limit (masks)
                        continue
                    value, matches = score({**current, key: base * factor})
                    result.evaluations += 1
                    bar.update(1)
                    # never at the cost of a sample's top class: the accuracy guard counts
                    # those, and a divergence gain is worth less than one of them
                    if value < best * (1.0 - MIN_GAIN) and matches >= agree:
                        best, agree, pick = value, matches, factor
                if pick is not None:
                    current[key], changed = base * pick, True
            if not changed:
                break
    result.after, result.amax = best, current
    result.factors = {k: current[k] / amax[k] for k in tunable if current[k] != amax[k]}
    return result


def refine_plan(float_model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float],
                data: Any, calibration: Any, rules: Any
                ) -> tuple[RefinementResult | None, str | None]:
    """Refinement as `insert` runs it (`calibration.refine_scales`): (result, None), or
    (None, a note saying why it did not run: over the budget, one-shot data; no note when
    it is off or the rule file has no `scale_refinement`)."""
    from qdq_onnx.quantize.calibration import calibration_feeds, rereadable

    policy = getattr(rules, "scale_refinement", None)
    mode = calibration.refine_scales
    # auto refines the default method's ranges: a method named by the user gives its own
    if mode == "off" or policy is None or (mode == "auto" and calibration.method is not None):
        return None, None
    if not rereadable(data):
        return None, ("scale refinement: skipped, the calibration data is a one-shot iterator "
                      "(give a file or arrays to have the ranges refined)")
    keys = len(_tunable(plan.activation_groups(), amax))
    if not keys:
        return None, None
    samples = policy.samples
    if mode == "auto":
        per_sample = keys * len(policy.factors) * policy.sweeps * max(
            1, model_macs(float_model, data))
        fits = int(policy.max_cost // per_sample)
        if fits < policy.min_samples:
            return None, (f"scale refinement ({policy.id}): skipped, {keys} ranges x "
                          f"{len(policy.factors)} factors x {policy.sweeps} sweeps on "
                          f"{policy.min_samples} samples would cost "
                          f"{per_sample * policy.min_samples:.3g} MAC (budget "
                          f"{policy.max_cost:.3g}); --refine-scales on runs it anyway")
        samples = min(samples, fits)
    model, feeds = calibration_feeds(float_model, data, calibration, samples)
    if not feeds:
        return None, None
    result = refine_amax(model, plan, amax, feeds, policy,
                         show_progress=calibration.show_progress)
    result.method = calibration.resolved
    for line in result.lines():
        log.info(line)
    return result, None
