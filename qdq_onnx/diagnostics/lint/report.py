"""What `qdq-onnx lint` reports: weighted layers with their INT8 prediction, and findings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Findings that mean a TensorRT fusion is lost (the rest are INT8 coverage or hard errors).
FUSION_CHECKS = frozenset({"residual-weighted-branch-quantized", "residual-skip-not-quantized",
                           "qdq-on-weighted-output", "requantization",
                           "layout-transpose-after-weighted", "residual-behind-layout-op"})


@dataclass
class Finding:
    """One lint hit: the check's id, name and severity, the node, and what was found."""

    id: str
    name: str
    severity: str
    node: str
    message: str


@dataclass
class WeightedLayer:
    """One weighted op as TensorRT will see it: quantized (in `scheme`, INT8 by TensorRT's
    rules) when data and weight are dequantized, the weight axis is the one the op rule
    gives, and the zero points are zeros of a type the rules' schemes quantize to."""

    node: str
    op_type: str
    quantized: bool
    scheme: str | None
    data_quantized: bool
    weight_quantized: bool
    axis: int | None
    expected_axis: int | None
    kept_float: str | None = None  # the plan's rule that left it in the float remainder


@dataclass
class LintReport:
    """Lint result: every weighted layer with its INT8 prediction, and the findings."""

    layers: list[WeightedLayer] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    typing: str = "strong"
    precisions: dict[str, int] = field(default_factory=dict)  # compute ops per precision
    kept_fp32: list[tuple[str, str, str, str]] = field(default_factory=list)  # recorded

    @property
    def fp32_compute_ops(self) -> int:
        """Compute ops a strongly typed build runs in FP32 (recorded islands included)."""
        return self.precisions.get("fp32", 0) + self.precisions.get("mixed", 0)

    @property
    def errors(self) -> list[Finding]:
        """Findings of severity error (the command exits 1 when there are any)."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def broken_fusions(self) -> list[Finding]:
        """Findings that mean a TensorRT fusion is lost."""
        return [f for f in self.findings if f.name in FUSION_CHECKS]

    def summary(self) -> str:
        """One line: INT8 weighted layers, broken fusions, errors and warnings (and, strongly
        typed, the compute ops per precision)."""
        schemes = sorted({r.scheme.split("-")[0].upper() for r in self.layers if r.scheme})
        quantized = sum(r.quantized for r in self.layers)
        typed = ""
        if self.typing == "strong":
            per = ", ".join(f"{n} {k}" for k, n in sorted(self.precisions.items()))
            typed = (f"; compute ops: {per or 'none'} ({len(self.kept_fp32)} FP32 by the "
                     f"range guard)")
        kept = sorted({r.kept_float for r in self.layers if r.kept_float})
        by_plan = (f" ({sum(bool(r.kept_float) for r in self.layers)} float by the plan: "
                   f"{', '.join(kept)})" if kept else "")
        return (f"{quantized} of {len(self.layers)} weighted layers "
                f"{'/'.join(schemes) or 'quantized'}{by_plan}, "
                f"{len(self.broken_fusions)} fusions broken, {len(self.errors)} errors, "
                f"{len(self.findings) - len(self.errors)} warnings{typed}")

    def to_dict(self) -> dict:
        """The report as plain data (for --format json)."""
        return {"summary": self.summary(), "weighted_layers": len(self.layers),
                "int8_layers": sum(r.quantized for r in self.layers),
                "broken_fusions": len(self.broken_fusions), "errors": len(self.errors),
                "typing": self.typing, "compute_ops": self.precisions,
                "fp32_compute_ops": self.fp32_compute_ops,
                "kept_fp32": [dict(zip(("node", "op", "rule", "reason"), k))
                              for k in self.kept_fp32],
                "layers": [asdict(r) for r in self.layers],
                "findings": [asdict(f) for f in self.findings]}
