"""The accuracy guard: PTQ that never silently collapses a model.

After calibration, the quantized model's outputs are compared with the float model's on (at
most `samples` of) the calibration data (`qdq_onnx.quantize.agreement`). When they miss the
rule file's targets, every quantized layer is ranked by the noise it adds across itself (one
float and one quantized pass: the noise-to-signal ratio of its output minus that of its
quantized inputs, on the first batch), and the worst are moved to the float remainder one at
a time, a move kept only when it brings the outputs closer to the targets (by more
agreement, or by the rule file's `min_gain_db` of SQNR), until they are met or the trial
budget is spent. Each move is a FloatDecision of the guard's rule with what
was measured; the plan's `accuracy_guard` records the agreement before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx

from qdq_onnx.errors import SettingError
from qdq_onnx.graph.index import GraphIndex
from qdq_onnx.placement.plan import FloatDecision, Placement, PlacementPlan
from qdq_onnx.placement.rules.model import AccuracyGuardPolicy
from qdq_onnx.progress import progress
from qdq_onnx.quantize.agreement import Agreement, class_axes, measure
from qdq_onnx.quantize.insert import insert_qdq

log = logging.getLogger("qdq_onnx.accuracy_guard")
# A layer adding less noise than this (a noise-to-signal ratio of 1e-4: 40 dB) is not a
# candidate: moving it cannot repair a miss.
MIN_ADDED_NOISE = 1e-4


@dataclass(frozen=True)
class AccuracyGuardConfig:
    """`enabled`: run the guard when calibration data is given (the rule file must have an
    `accuracy_guard` section). `agreement`, `sqnr_db`, `samples`, `max_trials`: override
    the rule file's targets and budgets (None: the rule file's)."""

    enabled: bool = True
    agreement: float | None = None
    sqnr_db: float | None = None
    samples: int | None = None
    max_trials: int | None = None

    def __post_init__(self) -> None:
        if self.agreement is not None and not (isinstance(self.agreement, (int, float))
                                               and 0.0 < self.agreement <= 1.0):
            raise SettingError("accuracy_target", f"must be an agreement in (0, 1], got "
                                                  f"{self.agreement!r}")
        for name in ("samples", "max_trials"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < (1 if name == "samples" else 0)):
                raise SettingError(name, f"must be a non-negative integer, got {value!r}")

    def policy(self, rule: AccuracyGuardPolicy) -> AccuracyGuardPolicy:
        """The rule file's policy with this config's overrides."""
        changes = {k: getattr(self, k) for k in ("agreement", "sqnr_db", "samples",
                                                 "max_trials") if getattr(self, k) is not None}
        return replace(rule, **changes)


@dataclass
class GuardResult:
    """What the guard did: the plan to insert, the agreement before and after, the layers
    moved, the trials spent and whether the targets were met."""

    plan: PlacementPlan
    before: Agreement
    after: Agreement
    moved: list[str]
    trials: int
    met: bool

    def lines(self) -> list[str]:
        verdict = "met" if self.met else "NOT met"
        moved = (f"moved {len(self.moved)} layer(s) to the float remainder "
                 f"({', '.join(self.moved[:6])}{', ...' if len(self.moved) > 6 else ''})"
                 if self.moved else "moved no layer")
        return [f"accuracy guard: {self.before.describe()} on {self.before.samples} "
                f"calibration samples; {moved} in {self.trials} trial(s); now "
                f"{self.after.describe()}: target {verdict}"]


class _Runner:
    """The guard's samples, read once, and the float model's outputs on them."""

    def __init__(self, float_model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]):
        from qdq_onnx.graph.sessions import inference_session

        self.float_model, self.feeds = float_model, feeds
        self.names = [o.name for o in float_model.graph.output]
        self.axes = class_axes(float_model)
        self.reference = self.run(inference_session(float_model))

    def run(self, session: Any, names: list[str] | None = None,
            feeds: list[dict[str, np.ndarray]] | None = None) -> list[list[np.ndarray]]:
        from qdq_onnx.graph.sessions import run_checked

        return [run_checked(session, names or self.names, f)
                for f in (self.feeds if feeds is None else feeds)]

    def agreement(self, model: onnx.ModelProto) -> Agreement:
        from qdq_onnx.graph.sessions import inference_session

        return measure(self.reference, self.run(inference_session(model)), self.names,
                       self.axes)


def _samples(feed: dict[str, np.ndarray]) -> int | None:
    """The samples of a batch, when every input holds them on its first axis (else None:
    the batch is run whole)."""
    sizes = {int(np.asarray(a).shape[0]) if np.ndim(a) else -1 for a in feed.values()}
    return sizes.pop() if len(sizes) == 1 and min(sizes) > 0 else None


def _part(feed: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[start:stop] for k, v in feed.items()}


def _summed_noise(float_session: Any, qdq_session: Any, tensors: list[str],
                  feed: dict[str, np.ndarray], splits: bool, batch_mib: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per tensor, the float output's power and the quantized output's noise power over
    the batch `feed`: run in parts of as many samples as keep one run's fetched tensors
    under `batch_mib` (measured on the first sample), when the graph `splits` its batch.
    The sums are those of the whole batch; only the memory is bounded (the ranking pass
    fetches every layer's output: 8.6 GB on a detector at 320x480 in batches of 32)."""
    from qdq_onnx.graph.sessions import run_checked

    signal, noise = np.zeros(len(tensors)), np.zeros(len(tensors))

    def add(part: dict[str, np.ndarray], ref: list[np.ndarray] | None = None) -> None:
        ref = ref if ref is not None else run_checked(float_session, tensors, part)
        got = run_checked(qdq_session, tensors, part)
        for i, (r, g) in enumerate(zip(ref, got)):
            r64 = np.asarray(r, np.float64)
            signal[i] += float(np.sum(r64 ** 2))
            noise[i] += float(np.sum((np.asarray(g, np.float64) - r64) ** 2))

    n = _samples(feed) if splits else None
    if n is None or n == 1:
        add(feed)
        return signal, noise
    first = _part(feed, 0, 1)
    ref = run_checked(float_session, tensors, first)
    per_sample = max(1, sum(np.asarray(a).nbytes for a in ref))
    size = max(1, int(batch_mib * 2 ** 20 // per_sample))
    if size >= n:  # the batch fits: run whole, as the sums were always taken
        add(feed)
        return signal, noise
    log.info("accuracy guard: ranking in runs of %d sample(s): one sample's layer outputs "
             "are %.0f MiB (--calib-batch-mib %d)", size, per_sample / 2 ** 20, batch_mib)
    add(first, ref)
    del ref
    for start in range(1, n, size):
        add(_part(feed, start, min(n, start + size)))
    return signal, noise


def added_noise(runner: _Runner, qdq: onnx.ModelProto, groups: dict[str, list[Placement]],
                batch_mib: int = 512) -> dict[str, float]:
    """Per layer group, the noise-to-signal ratio of its outputs minus that of its
    quantized activation inputs, in the quantized model against the float one, on the
    first batch (run in parts that keep each run's layer outputs under `batch_mib`)."""
    from qdq_onnx.graph.batch import fixed_batch
    from qdq_onnx.graph.sessions import inference_session, with_outputs

    index = GraphIndex(runner.float_model.graph)
    ins = {g: {p.tensor for p in ps if p.kind == "activation"} for g, ps in groups.items()}
    outs = {g: {o for p in ps if p.consumer in index.by_name
                for o in index.by_name[p.consumer].output if o} for g, ps in groups.items()}
    graph_inputs = set(index.graph_inputs)
    tensors = sorted({t for s in (*ins.values(), *outs.values()) for t in s} - graph_inputs)
    # Ranking needs no more than one batch: the layer that breaks the model shows at once.
    signal, noise = _summed_noise(
        inference_session(with_outputs(runner.float_model, tensors)),
        inference_session(with_outputs(qdq, tensors)), tensors, runner.feeds[0],
        fixed_batch(runner.float_model) is None, batch_mib)
    ratio = {t: (noise[i] / signal[i] if signal[i] > 0 else
                 (0.0 if noise[i] == 0 else float("inf"))) for i, t in enumerate(tensors)}
    return {g: max((ratio.get(t, 0.0) for t in outs[g]), default=0.0)
            - max((ratio.get(t, 0.0) for t in ins[g]), default=0.0) for g in groups}


def _coupled(model: onnx.ModelProto, groups: dict[str, list[Placement]]
             ) -> dict[str, list[Placement]]:
    """`groups` with the two products of each attention merged into one: TensorRT's fused
    MHA takes both quantized or neither (lint TRT-L016), so the guard moves them together."""
    from qdq_onnx.graph.attention import attention_products

    index = GraphIndex(model.graph)
    key_of = {p.consumer: g for g, ps in groups.items() for p in ps}
    out = dict(groups)
    for node in index.nodes:
        if node.op_type != "Softmax":
            continue
        found = attention_products(index, node)
        keys = [key_of.get(n.name) for n in found] if found else []
        if len(keys) == 2 and all(k in out for k in keys) and keys[0] != keys[1]:
            out[f"{keys[0]} + {keys[1]}"] = out.pop(keys[0]) + out.pop(keys[1])
    return out


def _without(plan: PlacementPlan, groups: dict[str, list[Placement]], moved: list[str]
             ) -> PlacementPlan:
    drop = {id(p) for g in moved for p in groups[g]}
    return replace(plan, placements=[p for p in plan.placements if id(p) not in drop])


def _worth_it(best: Agreement, trial: Agreement, policy: AccuracyGuardPolicy) -> bool:
    """Whether a trial move is kept: it brings the outputs closer to the targets, by more
    class-like agreement, by `min_gain_db` of SQNR at least, or onto the SQNR target (a
    move that buys a tenth of a dB costs a layer's INT8 speed for nothing measurable)."""
    if trial.shortfall(policy.agreement, policy.sqnr_db) >= \
            best.shortfall(policy.agreement, policy.sqnr_db) - 1e-9:
        return False
    (classes, db), (was_classes, was_db) = (
        trial.shortfall_parts(policy.agreement, policy.sqnr_db),
        best.shortfall_parts(policy.agreement, policy.sqnr_db))
    return classes < was_classes - 1e-9 or db <= was_db - policy.min_gain_db \
        or db == 0.0 < was_db


def run_guard(float_model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float],
              feeds: list[dict[str, np.ndarray]], policy: AccuracyGuardPolicy,
              show_progress: bool = True, batch_mib: int = 512) -> GuardResult:
    """The guard on a prepared float model, its plan and calibrated ranges, with the
    samples `feeds` (batches); returns the plan to insert and what was measured.
    `batch_mib`: the memory cap of one ranking run (CalibrationConfig.batch_mib)."""
    runner = _Runner(float_model, feeds)
    qdq, _ = insert_qdq(float_model, plan, amax)
    before = runner.agreement(qdq)
    met = before.shortfall(policy.agreement, policy.sqnr_db) == 0.0
    if met or policy.max_trials == 0:
        kept = replace(plan)
        kept.accuracy_guard = _summary(policy, before, before, [], 0, met)
        return GuardResult(kept, before, before, [], 0, met)
    groups = _coupled(float_model, plan.layer_groups())
    noise = added_noise(runner, qdq, groups, batch_mib)
    candidates = sorted((g for g in groups if noise[g] > MIN_ADDED_NOISE),
                        key=lambda g: -noise[g])[:policy.max_trials]
    best, moved, gains, trials = before, [], {}, 0
    with progress(total=len(candidates), desc="accuracy guard", unit="trial",
                  enable=show_progress) as bar:
        for g in candidates:
            trial = runner.agreement(insert_qdq(float_model, _without(plan, groups,
                                                                      [*moved, g]), amax)[0])
            bar.update(1)
            trials += 1
            if _worth_it(best, trial, policy):
                gains[g] = (best, trial)
                best, moved = trial, [*moved, g]
                if best.shortfall(policy.agreement, policy.sqnr_db) == 0.0:
                    break
    met = best.shortfall(policy.agreement, policy.sqnr_db) == 0.0
    guarded = _record(_without(plan, groups, moved), groups, moved, noise, gains, policy,
                      before.samples)
    guarded.accuracy_guard = _summary(policy, before, best, moved, trials, met)
    return GuardResult(guarded, before, best, moved, trials, met)


def _summary(policy: AccuracyGuardPolicy, before: Agreement, after: Agreement,
             moved: list[str], trials: int, met: bool) -> dict[str, Any]:
    """The plan's record of one guard run."""
    return {"rule": policy.id, "samples": before.samples, "trials": trials, "met": met,
            "target": {"agreement": policy.agreement, "sqnr_db": policy.sqnr_db},
            "before": before.to_dict(), "after": after.to_dict(), "moved": moved}


def _record(plan: PlacementPlan, groups: dict[str, list[Placement]], moved: list[str],
            noise: dict[str, float], gains: dict[str, tuple[Agreement, Agreement]],
            policy: AccuracyGuardPolicy, samples: int) -> PlacementPlan:
    decisions = []
    for g in moved:
        was, now = gains[g]
        why = (f"{policy.reason} Measured on {samples} calibration samples: it added a "
               f"noise-to-signal ratio of {noise[g]:.3g} across itself; leaving it float "
               f"took {was.describe()} to {now.describe()}")
        decisions += [FloatDecision(consumer=p.consumer, input=p.input, tensor=p.tensor,
                                    rule=policy.id, reason=why, layer=p.layer)
                      for p in groups[g]]
    return replace(plan, left_float=[*plan.left_float, *decisions])


def guard_plan(float_model: onnx.ModelProto, plan: PlacementPlan, amax: dict[str, float],
               data: Any, calibration: Any, rules: Any, config: AccuracyGuardConfig
               ) -> tuple[GuardResult | None, str | None]:
    """The guard as `insert` runs it: (result, None), or (None, a note saying why it did
    not run) when it is off, the rule file has none or the data cannot be read again."""
    from qdq_onnx.quantize.calibration import calibration_feeds, rereadable

    rule = getattr(rules, "accuracy_guard", None)
    if not config.enabled or rule is None:
        return None, None
    if not rereadable(data):
        return None, ("accuracy guard: skipped, the calibration data is a one-shot "
                      "iterator (give a file or arrays to have it checked)")
    policy = config.policy(rule)
    float_model, feeds = calibration_feeds(float_model, data, calibration, policy.samples)
    if not feeds:
        return None, None
    result = run_guard(float_model, plan, amax, feeds, policy,
                       show_progress=calibration.show_progress,
                       batch_mib=calibration.batch_mib)
    for line in result.lines():
        log.info(line)
    return result, None
