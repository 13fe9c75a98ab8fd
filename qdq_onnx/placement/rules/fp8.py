"""The rule file's `fp8` section: which weighted layers keep FP8 when a plan is made in FP8
(`insert --dtype fp8`) and which fall back to another scheme (INT8), by op type and shape.

Each rule names op types and optional conditions, all of which must hold: `grouped` (a
convolution with group > 1: depthwise or grouped), `channels_below` (fewer input or output
channels than this), `kernel_elements_above` (a kernel of more elements than this, 7x7 =
49). The first rule that matches a layer gives its scheme; a file without the section keeps
FP8 everywhere the op rules put Q/DQ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_KEYS = {"id", "name", "ops", "scheme", "grouped", "channels_below", "kernel_elements_above",
         "reason", "why"}


@dataclass(frozen=True)
class LayerShape:
    """What an FP8 rule reads of a weighted layer: its op, input and output channel counts
    (None when the weight does not tell), convolution group and kernel element count."""

    op: str
    in_channels: int | None
    out_channels: int | None
    group: int = 1
    kernel_elements: int = 1

    def describe(self) -> str:
        """The shape in words, for a placement's reason."""
        parts = [f"{self.in_channels} input and {self.out_channels} output channels"]
        if self.group > 1:
            parts.append(f"group {self.group}")
        if self.kernel_elements > 1:
            parts.append(f"{self.kernel_elements}-element kernel")
        return ", ".join(parts)


@dataclass(frozen=True)
class Fp8Rule:
    """One rule of the `fp8` section: layers of `ops` meeting every condition given take
    `scheme` (fp8, or int8 as the fallback TensorRT recommends)."""

    id: str
    name: str
    ops: tuple[str, ...]
    scheme: str
    reason: str
    why: str
    grouped: bool | None = None
    channels_below: int | None = None
    kernel_elements_above: int | None = None

    def describe(self) -> str:
        """The rule in words, for listings."""
        conditions = [*(["grouped"] if self.grouped else []),
                      *([f"< {self.channels_below} channels"] if self.channels_below else []),
                      *([f"kernel > {self.kernel_elements_above} elements"]
                        if self.kernel_elements_above else [])]
        when = f" ({', '.join(conditions)})" if conditions else ""
        return f"fp8 policy: {', '.join(self.ops)}{when}: {self.scheme}"

    def matches(self, layer: LayerShape) -> bool:
        """Whether `layer` is one this rule decides."""
        if layer.op not in self.ops:
            return False
        if self.grouped is not None and (layer.group > 1) != self.grouped:
            return False
        if self.channels_below is not None:
            known = [c for c in (layer.in_channels, layer.out_channels) if c is not None]
            if not known or min(known) >= self.channels_below:
                return False
        return self.kernel_elements_above is None or \
            layer.kernel_elements > self.kernel_elements_above


def _count(ctx: Any, obj: dict, key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
        raise ctx.fail(obj, f"{what}: {key!r} must be a positive integer, got {value!r}")
    return value


def fp8_rules(ctx: Any, items: Any) -> list[Fp8Rule]:
    """The `fp8` section: a list of rules, tried in order."""
    from qdq_onnx.placement.rules.parse_policy import rule_items

    out = []
    for item, rule_id, what in rule_items(ctx, items, _KEYS, "fp8"):
        grouped = item.get("grouped")
        if grouped is not None and not isinstance(grouped, bool):
            raise ctx.fail(item, f"{what}: 'grouped' must be true or false, got {grouped!r}")
        scheme = ctx.scheme(item, what, None)
        if scheme is None:
            raise ctx.fail(item, f"{what} needs a 'scheme' (fp8, or the fallback: int8)")
        out.append(Fp8Rule(
            id=rule_id, name=ctx.text(item, "name", what), ops=ctx.str_list(item, "ops", what),
            scheme=scheme, reason=ctx.text(item, "reason", what),
            why=str(item.get("why", "")).strip(), grouped=grouped,
            channels_below=_count(ctx, item, "channels_below", what),
            kernel_elements_above=_count(ctx, item, "kernel_elements_above", what)))
    return out


def layer_shape(op: str, weight_shape: tuple[int, ...] | None, group: int,
                transposed: bool) -> LayerShape:
    """A weighted layer's shape from its weight: [C_out, C_in / group, k...] for a
    convolution, [C_in, C_out / group, k...] for a transposed one (`transposed`), [K, N]
    for a GEMM (the caller passes the weight as [C_in, C_out])."""
    if not weight_shape or len(weight_shape) < 2:
        return LayerShape(op, None, None, group)
    kernel = math.prod(weight_shape[2:]) if len(weight_shape) > 2 else 1
    if transposed:
        return LayerShape(op, weight_shape[0], weight_shape[1] * group, group, kernel)
    if len(weight_shape) > 2:
        return LayerShape(op, weight_shape[1] * group, weight_shape[0], group, kernel)
    return LayerShape(op, weight_shape[0], weight_shape[1], group, kernel)
