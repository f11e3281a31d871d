"""What the parity engine finds: objects that are truthy when they pass, serialise to the JSON
report, and when they fail say which case and output drifted, from which time step, and the
tolerance that would have been needed to pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rnnexport.parity.latency import Latency
from rnnexport.sweep import Case
from rnnexport.tolerance import Tolerance

if TYPE_CHECKING:
    from rnnexport.parity.decisions import OutputQuality
    from rnnexport.plugins import ExportDetails
    from rnnexport.thresholds import Thresholds


@dataclass(frozen=True)
class Export:
    """What identifies an export and how it is judged: shared by the export under test and its result."""

    source: str
    source_kind: str
    target: str
    path: str
    tolerance: Tolerance
    details: ExportDetails = field(default_factory=dict)
    # Set for a quantized export judged by decisions (SNR, top-1 agreement, KL) instead of `tolerance`.
    thresholds: Thresholds | None = None


@dataclass(frozen=True)
class OutputComparison:
    name: str
    passed: bool
    reference_shape: tuple[int, ...]
    export_shape: tuple[int, ...] | None
    max_abs: float | None = None
    max_rel: float | None = None
    nonfinite_reference: int = 0
    nonfinite_export: int = 0
    first_bad_step: int | None = None
    needed_atol: float | None = None
    reason: str = ""
    # What the criterion measured: the largest |export - reference| / (atol + rtol * |reference|)
    # over the elements (above 1 fails) and the index of that element.
    worst_ratio: float | None = None
    worst_index: tuple[int, ...] | None = None
    mean_abs: float | None = None
    median_abs: float | None = None
    p99_abs: float | None = None

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "reference_shape": list(self.reference_shape),
            "export_shape": None if self.export_shape is None else list(self.export_shape),
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "nonfinite_reference": self.nonfinite_reference,
            "nonfinite_export": self.nonfinite_export,
            "first_bad_step": self.first_bad_step,
            "needed_atol": self.needed_atol,
            "reason": self.reason,
            "worst_ratio": _finite(self.worst_ratio),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "mean_abs": self.mean_abs,
            "median_abs": self.median_abs,
            "p99_abs": self.p99_abs,
        }


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an error where nothing was allowed is written as null, with the reason."""
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True)
class OutputStats:
    """The absolute error of one output over the whole sweep (every element of every case)."""

    name: str
    elements: int
    mean_abs: float | None = None
    median_abs: float | None = None
    p99_abs: float | None = None
    max_abs: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "elements": self.elements, "mean_abs": self.mean_abs,
                "median_abs": self.median_abs, "p99_abs": self.p99_abs, "max_abs": self.max_abs}


@dataclass(frozen=True)
class Worst:
    """Where an export came closest to (or went furthest over) its tolerance."""

    ratio: float
    case: str
    output: str
    index: tuple[int, ...]

    def describe(self) -> str:
        ratio = "inf" if not math.isfinite(self.ratio) else f"{self.ratio:.2g}"
        return f"{ratio} at {self.output}{list(self.index)} in {self.case}"

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": _finite(self.ratio), "case": self.case, "output": self.output, "index": list(self.index)}


@dataclass(frozen=True)
class CaseResult:
    case: Case
    reference_method: str
    outputs: tuple[OutputComparison, ...]
    error: str = ""
    skipped: str = ""

    @property
    def passed(self) -> bool:
        """Skipped cases (no ground truth at this length) hold no comparison and do not fail."""
        return not self.error and all(self.outputs)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        if self.error:
            return [f"{self.case.name}: {self.error}"]
        return [f"{self.case.name}: output '{o.name}': {o.reason}" for o in self.outputs if not o]

    def kept_state(self, first: CaseResult) -> bool:
        """This is the first case again, right after itself on the same runner, and failed where
        the first run passed with finite outputs: only state kept from that call explains it."""
        return (self.case.kind == "again" and not self.passed and first.passed
                and not any(o.nonfinite_export or o.nonfinite_reference for o in self.outputs))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.case.to_dict(),
            "reference_method": self.reference_method,
            "passed": self.passed,
            "skipped": self.skipped,
            "error": self.error,
            "outputs": [o.to_dict() for o in self.outputs],
        }


def _from_step(step: int | None) -> str:
    return "" if step is None else f" from time step {step}"


@dataclass(frozen=True)
class LayerDrift:
    """One layer's output on the failing case, against the closest intermediate tensor of the
    export. `matches` is None when the export holds no tensor of that layer's shape."""

    name: str
    kind: str
    matches: bool | None
    max_abs: float | None = None
    first_bad_step: int | None = None
    tensor: str = ""
    snr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "matches": self.matches, "max_abs": self.max_abs,
                "first_bad_step": self.first_bad_step, "tensor": self.tensor, "snr_db": self.snr_db}


@dataclass(frozen=True)
class Drift:
    """Where a failing export starts to drift: the first failing case and output, its first time
    step over the tolerance, and, layer by layer, which layer's output the export first fails to
    reproduce. `layers_note` says why layers were not compared, when they were not."""

    case: str
    output: str
    first_bad_step: int | None
    layers: tuple[LayerDrift, ...] = ()
    layers_note: str = ""

    @property
    def first_layer(self) -> LayerDrift | None:
        return next((layer for layer in self.layers if layer.matches is False), None)

    def describe(self) -> str:
        text = f"drift starts in output '{self.output}' of case {self.case}{_from_step(self.first_bad_step)}"
        layer = self.first_layer
        if layer is not None:
            error = f", max abs err {layer.max_abs:.3g}" if layer.max_abs is not None else ""
            text += f"; first diverging layer '{layer.name}' ({layer.kind}){_from_step(layer.first_bad_step)}{error}"
            before = [x.name for x in self.layers[: self.layers.index(layer)] if x.matches]
            if before:
                text += f"; layers before it match: {', '.join(before)}"
        elif self.layers:
            text += "; every layer's output is reproduced inside the export"
        elif self.layers_note:
            text += f"; layers not compared: {self.layers_note}"
        return text

    def to_dict(self) -> dict[str, Any]:
        layer = self.first_layer
        return {"case": self.case, "output": self.output, "first_bad_step": self.first_bad_step,
                "first_layer": layer.name if layer else None, "layers": [x.to_dict() for x in self.layers],
                "layers_note": self.layers_note, "description": self.describe()}


def not_run_because(first: str) -> str:
    """Why a source was not run: --fail-fast stopped the run when the source `first` failed."""
    return f"not run (--fail-fast): {first} failed first"


@dataclass(frozen=True, kw_only=True)
class ExportResult(Export):
    """Parity of one export against its source over the whole sweep."""

    device: str
    reference_device: str
    cases: tuple[CaseResult, ...]
    error: str = ""
    validated: bool = True
    seconds: float = 0.0
    drift: Drift | None = None
    # Per output of a quantized export, judged against `thresholds`; its layers, lowest SNR first.
    quality: tuple[OutputQuality, ...] = ()
    layers_by_snr: tuple[LayerDrift, ...] = ()
    outputs: tuple[OutputStats, ...] = ()
    latency: Latency | None = None
    # Why the sweep ended before its last case (--fail-fast), when it did.
    stopped: str = ""

    @classmethod
    def not_run(cls, source: str, target: str, path: str, first: str) -> ExportResult:
        """A failing entry for an export of a source the run stopped before (--fail-fast), once
        the source `first` failed."""
        return cls(source=source, source_kind="unknown", target=target, path=path,
                   tolerance=Tolerance(0.0, 0.0), device="-", reference_device="-", cases=(),
                   error=not_run_because(first))

    @classmethod
    def of(cls, export: Export, **found: Any) -> ExportResult:
        """The result for `export` (an `Export`, or anything derived from one) with what was `found`."""
        return cls(**{f.name: getattr(export, f.name) for f in fields(Export)}, **found)

    @property
    def passed(self) -> bool:
        return (self.validated and not self.error and bool(self.checked) and all(self.cases) and all(self.quality)
                and not (self.latency and self.latency.failures()))

    @property
    def worst(self) -> Worst | None:
        """The element that came closest to its allowed error (or went furthest over it)."""
        found = [Worst(o.worst_ratio, c.case.name, o.name, o.worst_index) for c in self.checked for o in c.outputs
                 if o.worst_ratio is not None and o.worst_index is not None]
        return max(found, key=lambda w: w.ratio, default=None)

    @property
    def checked(self) -> list[CaseResult]:
        """The cases compared against a reference (not skipped)."""
        return [c for c in self.cases if not c.skipped]

    @property
    def skipped(self) -> list[CaseResult]:
        return [c for c in self.cases if c.skipped]

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL" if self.validated else "NOT VALIDATED"

    def summary(self) -> dict[str, Any]:
        """What an artifact records of the parity it was checked for."""
        return {
            "passed": self.passed,
            "cases": len(self.checked),
            "cases_passed": sum(1 for c in self.checked if c),
            "cases_skipped": len(self.skipped),
            "lengths": sorted({c.case.length for c in self.checked if c.case.length is not None}),
            "batches": sorted({c.case.batch for c in self.checked}),
            "max_abs": self.max_abs,
            "tolerance": self.tolerance.to_dict(),
            "device": self.device,
        }

    def __bool__(self) -> bool:
        return self.passed

    def _stat(self, attribute: str) -> float | None:
        values = [getattr(o, attribute) for c in self.cases for o in c.outputs if getattr(o, attribute) is not None]
        return max(values) if values else None

    @property
    def max_abs(self) -> float | None:
        return self._stat("max_abs")

    @property
    def max_rel(self) -> float | None:
        return self._stat("max_rel")

    def failures(self) -> list[str]:
        if self.error:
            return [self.error]
        lines = [line for case in self.cases for line in case.failures()]
        lines += [quality.describe() for quality in self.quality if not quality]
        if any(case.kept_state(self.cases[0]) for case in self.cases):
            lines.append("the export keeps state between calls: the first case run again right after itself "
                         "gave another answer")
        if self.latency is not None:
            lines += self.latency.failures()
        return lines

    @property
    def criterion(self) -> str:
        """What the export is judged by, in words: its thresholds where quantized, else its tolerance."""
        return str(self.tolerance) if self.thresholds is None else str(self.thresholds)

    def quantized(self) -> dict[str, Any]:
        """How a quantized export is judged and what it reached, for the report."""
        return {"thresholds": self.thresholds.to_dict(), "calibration": self.details.get("calibration"),
                "outputs": [q.to_dict() for q in self.quality],
                "layers_by_snr": [layer.to_dict() for layer in self.layers_by_snr]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "target": self.target,
            "path": self.path,
            "device": self.device,
            "reference_device": self.reference_device,
            "tolerance": self.tolerance.to_dict(),
            "passed": self.passed,
            "validated": self.validated,
            "error": self.error,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "details": self.details,
            "drift": self.drift.to_dict() if self.drift else None,
            **({"quantized": self.quantized()} if self.thresholds is not None else {}),
            "timing": {"seconds": round(self.seconds, 3)},
            "worst": self.worst.to_dict() if self.worst else None,
            "outputs": [o.to_dict() for o in self.outputs],
            "latency": self.latency.to_dict() if self.latency else None,
            "stopped": self.stopped,
            "cases": [c.to_dict() for c in self.cases],
        }
