"""Calibration: run the float model on data and derive each quantized activation's range.

One onnxruntime session exposes every tensor the plan quantizes. Max calibration is one
pass in which onnxruntime reduces each tensor to its max |x|. The histogram methods
(percentile, entropy, mse) take two passes when the data can be read twice: the first finds
each tensor's exact max, the second fills a 2048-bin histogram over exactly that range, so
the result does not depend on the batch size or the order of the samples; a one-shot
iterator gets one pass with a range that grows (and a note saying so). Memory does not grow
with the number of samples.

After calibration, the clipping guard measures per tensor the fraction of calibration
values above the chosen range and the SQNR it implies; above a threshold it warns, naming
the tensor and suggesting the method with the best SQNR for it. It never changes a scale.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from qdq_onnx.errors import QdqError
from qdq_onnx.graph.batch import fixed_batch, follows_batch, relax_batch
from qdq_onnx.parallel import World, shard_batches
from qdq_onnx.parallel.context import RunContext
from qdq_onnx.progress import progress
from qdq_onnx.quantize.calib_batches import batch_size, rereadable, session
from qdq_onnx.quantize.config import METHODS, SINGLE_METHODS, CalibrationConfig
from qdq_onnx.quantize.histogram import DEFAULT_BINS, TensorStats
from qdq_onnx.quantize.methods import (
    ENTROPY_MAX_CLIP,
    FLOAT_METHODS,
    amax_from_stats,
    check_method_for,
    entropy_threshold,
)
from qdq_onnx.types.scheme import Scheme

__all__ = ["METHODS", "CalibrationConfig", "CalibrationResult", "ClippingWarning",
           "TensorStats", "amax_from_stats", "calibrate_groups", "calibrate_plan",
           "calibration_feeds",
           "collect_stats", "group_amax"]

log = logging.getLogger("qdq_onnx.calibration")


class ClippingWarning(UserWarning):
    """Calibration chose a range that clips many calibration values of a tensor."""


def _pass(model: onnx.ModelProto, tensors: list[str], data: Any, config: CalibrationConfig,
          stats: dict[str, TensorStats], with_hist: bool, desc: str, run: RunContext,
          batch: int, relaxed: bool) -> None:
    from qdq_onnx.data.feeds import as_batches
    from qdq_onnx.graph.sessions import run_checked

    inputs = {i.name for i in model.graph.input}
    fetch = [t for t in tensors if t not in inputs]
    batch_iter, total = as_batches(data, model, batch_size=batch,
                                   limit=config.max_samples, source="calibration data",
                                   any_batch=relaxed)
    w = run.world
    batch_iter = shard_batches(batch_iter, w.rank, w.size)  # whole batches per rank
    # Without histograms only max |x| is needed: onnxruntime reduces each tensor itself.
    run_session, names = session(relax_batch(model) if relaxed else model, fetch,
                                 reduce_max=not with_hist)
    seen = 0
    with progress(total=total and -(-total // w.size), desc=desc, unit="sample",
                  enable=config.show_progress and w.is_root) as bar:
        for feed in batch_iter:
            current = dict(zip(fetch, run_checked(run_session, names, feed) if fetch else []))
            for t in tensors:
                try:
                    stats[t].update(current[t] if t in current else feed[t], with_hist)
                except QdqError as exc:
                    if "NaN/Inf" not in str(exc):
                        raise
                    raise QdqError(f"calibration: tensor {t!r} produced NaN/Inf on the data "
                                   f"(batch starting at sample {seen})") from exc
            n = next(iter(feed.values())).shape[0]
            seen += n
            bar.update(n)
    if w.size > 1:
        seen = _reduce(stats, tensors, with_hist, seen, w)
    if seen == 0:
        raise QdqError("calibration data is empty")


def _reduce(stats: dict[str, TensorStats], tensors: list[str], with_hist: bool, seen: int,
            w: World) -> int:
    """Every rank's statistics summed (counts, histograms) or maximised (max |x|): the
    statistics of all the batches, as one process would have them (integer sums over a
    range fixed by the first pass: exact). The samples seen by all ranks."""
    amax = w.allreduce_max(np.array([stats[t].amax for t in tensors], np.float64),
                           "the calibration maxima")
    counts = w.allreduce_sum(np.array([stats[t].count for t in tensors] + [seen], np.int64),
                             "the calibration counts")
    hist = (w.allreduce_sum(np.stack([stats[t].hist for t in tensors]),
                            "the calibration histograms") if with_hist and tensors else None)
    for i, t in enumerate(tensors):
        stats[t].amax, stats[t].count = float(amax[i]), int(counts[i])
        if hist is not None:
            stats[t].hist = hist[i].copy()
    return int(counts[-1])


def runs_relaxed(model: onnx.ModelProto, data: Any) -> bool:
    """Whether the model computes its samples apart with its fixed batch relaxed (a graph
    can hard-code its batch in a Reshape): tried on two samples of `data` when it can be
    read again."""
    from qdq_onnx.data.feeds import as_batches

    if not rereadable(data):
        return False
    try:
        probe, _ = as_batches(data, model, batch_size=2, limit=2, any_batch=True)
        feed = next(iter(probe))
    except Exception:  # noqa: BLE001 - the data is judged by the real pass
        return False
    return next(iter(feed.values())).shape[0] >= 2 and follows_batch(model, feed)


def calibration_feeds(model: onnx.ModelProto, data: Any, config: CalibrationConfig,
                      limit: int | None) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """(the model to run, at most `limit` samples of `data` as batches of
    `config.batch_size`) for the steps after calibration that compare quantized and float
    passes on the calibration data: a graph that hard-codes its batch but computes samples
    apart is returned relaxed, as calibration runs it (Q/DQ models built from it are too)."""
    from qdq_onnx.data.feeds import as_batches

    relaxed = fixed_batch(model) is not None and runs_relaxed(model, data)
    if relaxed:
        model = relax_batch(model)
    batches, _ = as_batches(data, model, batch_size=config.batch_size, limit=limit,
                            source="calibration data", any_batch=relaxed)
    return model, list(batches)


def collect_stats(model: onnx.ModelProto, tensors: Iterable[str], data: Any,
                  config: CalibrationConfig | None = None, with_hist: bool = True,
                  bins: int = DEFAULT_BINS, run: RunContext | None = None
                  ) -> dict[str, TensorStats]:
    """Stream `data` through the float model (batches and sample limit of `config`),
    keeping TensorStats per tensor (see the module docstring for the one- and two-pass
    cases); with several ranks in `run`, each reads every N-th batch and the statistics
    are reduced."""
    config = config or CalibrationConfig()
    run = run or RunContext()
    tensors = sorted(set(tensors))
    two_pass = with_hist and rereadable(data)
    if with_hist and not two_pass and run.world.size > 1:
        raise QdqError("calibration with several ranks needs data that can be read twice "
                       "(files or arrays, not a one-shot iterator): the histograms of a "
                       "one-pass growing range cannot be reduced exactly")
    stats = {t: TensorStats(bins=bins) for t in tensors}
    # decided once for every pass (each probes or holds the model's activations)
    relaxed = fixed_batch(model) is not None and runs_relaxed(model, data)
    batch = batch_size(model, tensors, data, config, relaxed)
    _pass(model, tensors, data, config, stats, with_hist and not two_pass,
          "calibrate" if not two_pass else "calibrate (1/2: ranges)", run, batch, relaxed)
    if two_pass:
        ranged = {t: TensorStats.with_range(s.amax, bins) for t, s in stats.items()}
        _pass(model, tensors, data, config, ranged, True, "calibrate (2/2: histograms)", run,
              batch, relaxed)
        stats = ranged
    elif with_hist:
        log.info("calibration data is a one-shot iterator: histograms were filled in one "
                 "pass with a growing range, so scales may depend on the sample order")
    return stats


def group_amax(stats: dict[str, TensorStats], groups: dict[str, list[str]],
               config: CalibrationConfig, schemes: dict[str, Scheme]) -> dict[str, float]:
    """One amax per scale key: the max over the member tensors' amax, in the key's
    scheme (every key has one: `schemes`)."""
    return {key: max(amax_from_stats(stats[t], config.method_for(schemes[key].is_float),
                                     schemes[key], config.percentile)
                     for t in members)
            for key, members in groups.items()}


@dataclass
class TensorClipping:
    """The clipping guard's measurement of one tensor."""

    tensor: str
    amax: float
    clipped: float  # fraction of calibration values above amax
    sqnr_db: float  # estimated from the histogram
    suggestion: str | None = None  # the method with the best estimated SQNR, if another


@dataclass
class CalibrationResult:
    """Calibrated amax per scale key, the clipping guard's per-tensor measurements (for
    histogram methods), and the warnings it raised."""

    amax: dict[str, float]
    method: str
    clipping: list[TensorClipping] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # where a method deviated, and why
    choices: dict[str, str] = field(default_factory=dict)  # auto: the method per scale key
    refinement: Any = None  # refine_scales.RefinementResult when the ranges were refined


def _guard(stats: dict[str, TensorStats], groups: dict[str, list[str]],
           amax: dict[str, float], config: CalibrationConfig,
           schemes: dict[str, Scheme]) -> tuple[list[TensorClipping], list[str]]:
    rows, messages = [], []
    for key, members in groups.items():
        scheme = schemes[key]
        method = config.method_for(scheme.is_float)
        for t in dict.fromkeys(members):  # a tensor read by several consumers: once
            s = stats[t]
            row = TensorClipping(t, amax[key], s.clipped_fraction(amax[key]),
                                 s.estimated_sqnr_db(amax[key], scheme))
            if row.clipped > config.clip_warning:
                sqnr = {m: s.estimated_sqnr_db(amax_from_stats(s, m, scheme, config.percentile),
                                               scheme)
                        for m in (FLOAT_METHODS if scheme.is_float else SINGLE_METHODS)}
                best = max(sqnr, key=sqnr.__getitem__)
                row.suggestion = best if best != method else None
                hint = (f"; method {best} estimates {sqnr[best]:.1f} dB" if row.suggestion
                        else "")
                messages.append(f"calibration ({method}) clips {row.clipped * 100:.2f}% of "
                                f"the values of {t!r} (estimated SQNR {row.sqnr_db:.1f} dB)"
                                f"{hint}")
            rows.append(row)
    return rows, messages


def _entropy_notes(stats: dict[str, TensorStats], groups: dict[str, list[str]],
                   schemes: dict[str, Scheme]) -> list[str]:
    """Where the reference KL minimum clipped too much and a restricted one was used."""
    notes = []
    scheme_of = {t: schemes[key] for key, members in groups.items() for t in members}
    for t, s in stats.items():
        scheme = scheme_of[t]
        used, reference = entropy_threshold(s, scheme)
        if used != reference:
            notes.append(
                f"entropy: the KL minimum of {t!r} ({reference:.4g}) clips "
                f"{s.clipped_fraction(reference) * 100:.1f}% of its values (estimated "
                f"{s.estimated_sqnr_db(reference, scheme):.1f} dB); used the best threshold "
                f"clipping at most {ENTROPY_MAX_CLIP * 100:g}%: {used:.4g} "
                f"({s.estimated_sqnr_db(used, scheme):.1f} dB)")
    for note in notes:
        log.info(note)
    return notes


def calibrate_plan(model: onnx.ModelProto, plan: Any, data: Any,
                   config: CalibrationConfig | None = None, run: RunContext | None = None,
                   refine: Callable[[dict[str, float]], tuple[Any, str | None]] | None = None
                   ) -> CalibrationResult:
    """Calibrated amax per scale key (scale group, else tensor) of a placement plan, each
    in its placements' scheme, with the clipping guard: tensors clipping more than
    `config.clip_warning` of their calibration values are reported through `warnings`
    (ClippingWarning) and in the result. `refine`: see `calibrate_groups` (insert passes
    `qdq_onnx.quantize.refine_scales.refine_plan`'s ranges tuned on the outputs)."""
    config = config or CalibrationConfig()
    activation_groups = plan.activation_groups()
    groups = {key: [p.tensor for p in members] for key, members in activation_groups.items()}
    if not groups:
        return CalibrationResult({}, config.resolved)
    schemes = {key: members[0].quantization
               for key, members in activation_groups.items()}
    return calibrate_groups(model, groups, data, config, schemes, run, refine)


def calibrate_groups(model: onnx.ModelProto, groups: dict[str, list[str]], data: Any,
                     config: CalibrationConfig, schemes: dict[str, Scheme],
                     run: RunContext | None = None,
                     refine: Callable[[dict[str, float]], tuple[Any, str | None]] | None = None
                     ) -> CalibrationResult:
    """Calibrate the tensors of `groups` (scale key -> member tensors) on the float model;
    `schemes` gives each key's precision (a key without one is a KeyError: no scheme is
    assumed). `refine(amax)`: (a RefinementResult with the ranges to use, or None; a
    note), run before the clipping guard."""
    missing = set(groups) - set(schemes)
    if missing:
        raise KeyError(f"no scheme for scale keys {sorted(missing)[:5]}")
    # Each scheme's method is checked before any data is read (FP8 with entropy: one line).
    used = {check_method_for(config.method_for(s.is_float), s) for s in schemes.values()}
    # an all-FP8 plan takes max by default: name what was done
    method = config.method_for(bool(schemes) and all(s.is_float for s in schemes.values()))
    tensors = {t for members in groups.values() for t in members}
    stats = collect_stats(model, tensors, data, config, run=run,
                          with_hist=any(m.needs_histogram for m in used))
    if method == "auto":
        from collections import Counter

        from qdq_onnx.graph.ops import WEIGHTED_OPS
        from qdq_onnx.quantize.auto import auto_amax

        amax, choice = auto_amax(model, groups, stats, data, config, schemes,
                                 weighted=WEIGHTED_OPS)
        result = CalibrationResult(amax, method)
        counts = Counter(choice.values())
        result.notes = ["auto: the best threshold at the reading layer's output was "
                        + ", ".join(f"{m} for {n} tensor(s)" for m, n in counts.most_common())]
        result.choices = choice
    else:
        amax = group_amax(stats, groups, config, schemes)
        result = CalibrationResult(amax, method)
    if method == "entropy":
        result.notes = _entropy_notes(stats, groups, schemes)
    if refine is not None:
        refined, note = refine(amax)
        result.notes += [note] if note else []
        if refined is not None:
            amax = result.amax = refined.amax
            result.refinement = refined
            result.notes += refined.lines()
    if method != "max":  # max clips nothing on its own calibration data
        result.clipping, result.warnings = _guard(stats, groups, amax, config, schemes)
    for message in result.warnings:
        warnings.warn(message, ClippingWarning, stacklevel=3)
    return result
