"""The parity engine: same inputs to the reference and to each export, every output compared.

It knows nothing of formats. Results are objects: truthy when they pass, serialisable, and when
they fail they say which case and output drifted, from which time step, and the tolerance that
would have been needed to pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.options import Tolerance
from rnnexport.model import TensorInfo
from rnnexport.runner import NEXT, Arrays, ReferenceRunner, Runner, StreamRunner
from rnnexport.sweep import Case

# Relative error divides by max(|reference|, REL_FLOOR) so that near-zero outputs do not explode.
REL_FLOOR = 1e-3


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
        }


def compare_output(
    name: str, reference: np.ndarray, exported: np.ndarray | None, tolerance: Tolerance, time_axis: int | None
) -> OutputComparison:
    ref_shape = tuple(reference.shape)
    if exported is None:
        return OutputComparison(name, False, ref_shape, None, reason=f"the export has no output '{name}'")
    exp_shape = tuple(exported.shape)
    if exp_shape != ref_shape:
        return OutputComparison(name, False, ref_shape, exp_shape, reason=f"shape {exp_shape} != reference {ref_shape}")
    ref = reference.astype(np.float64)
    exp = exported.astype(np.float64)
    bad_ref = int(np.size(ref) - np.count_nonzero(np.isfinite(ref)))
    bad_exp = int(np.size(exp) - np.count_nonzero(np.isfinite(exp)))
    if ref.size == 0:
        return OutputComparison(name, True, ref_shape, exp_shape, 0.0, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(exp - ref)
        excess = diff - tolerance.rtol * np.abs(ref)
        rel = diff / np.maximum(np.abs(ref), REL_FLOOR)
    finite = np.isfinite(diff)
    max_abs = float(np.max(diff[finite])) if finite.any() else float("nan")
    max_rel = float(np.max(rel[finite])) if finite.any() else float("nan")
    needed = float(max(0.0, np.max(excess[finite]))) if finite.any() else float("nan")
    within = np.where(np.isfinite(excess), excess <= tolerance.atol, False)
    first_bad = None
    if not within.all() and time_axis is not None and ref.ndim > time_axis:
        per_step = np.moveaxis(~within, time_axis, 0).reshape(ref.shape[time_axis], -1).any(axis=1)
        first_bad = int(np.argmax(per_step))
    reasons = []
    if bad_ref or bad_exp:
        reasons.append(f"NaN/Inf: {bad_exp} in export, {bad_ref} in reference")
    if not within.all() and not (bad_ref or bad_exp):
        where = f" from time step {first_bad}" if first_bad is not None else ""
        reasons.append(
            f"max abs err {max_abs:.3g} exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g}{where}"
            f" (would pass with atol {needed:.3g})"
        )
    passed = not reasons
    return OutputComparison(
        name, passed, ref_shape, exp_shape, max_abs, max_rel, bad_ref, bad_exp, first_bad, needed, "; ".join(reasons)
    )


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

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.case.to_dict(),
            "reference_method": self.reference_method,
            "passed": self.passed,
            "skipped": self.skipped,
            "error": self.error,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass(frozen=True)
class ExportResult:
    """Parity of one export against its source over the whole sweep."""

    source: str
    source_kind: str
    target: str
    path: str
    device: str
    reference_device: str
    tolerance: Tolerance
    cases: tuple[CaseResult, ...]
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    validated: bool = True

    @property
    def passed(self) -> bool:
        return self.validated and not self.error and bool(self.checked) and all(self.cases)

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
        return [line for case in self.cases for line in case.failures()]

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
            "cases": [c.to_dict() for c in self.cases],
        }


@dataclass(frozen=True)
class ExportUnderTest:
    """An export and its runner; `runner` is None when this machine cannot run the export,
    and `not_runnable` says why (the export is then reported as not validated)."""

    source: str
    source_kind: str
    target: str
    path: str
    runner: Runner | None
    tolerance: Tolerance
    time_axes: Mapping[str, int | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    not_runnable: str = ""
    stream_runner: StreamRunner | None = None


ProgressFn = Callable[[str, int, int], None]


def _failed_run(exc: Exception) -> str:
    text = f"the export failed to run: {type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."


def run_case(reference_outputs: Mapping[str, np.ndarray], runner: Runner, case: Case, export: ExportUnderTest, method: str) -> CaseResult:
    try:
        outputs = runner.run(case.inputs)
    except KeyError as exc:
        return CaseResult(case, method, (), error=f"the export takes an input {exc} that the source does not have "
                                                   f"(source inputs: {', '.join(case.inputs)})")
    except Exception as exc:  # noqa: BLE001 - an export that cannot run this case fails it, with the reason
        return CaseResult(case, method, (), error=_failed_run(exc))
    comparisons = tuple(
        compare_output(name, ref, outputs.get(name), export.tolerance, export.time_axes.get(name))
        for name, ref in reference_outputs.items()
    )
    return CaseResult(case, method, comparisons)


def stream(runner: StreamRunner, case: Case, inputs: Sequence[TensorInfo], time_axes: Mapping[str, int | None]
           ) -> tuple[Arrays, Arrays]:
    """Feed `case` to a streaming export `case.chunk` steps at a time from its initial state,
    carrying the state. Per-step outputs are joined along time, others are the last chunk's;
    the state after the last chunk is returned keyed by `<name>_next`."""
    state = runner.initial_state(case.batch)
    specs = {spec.name: spec for spec in inputs}
    pieces = []
    for start in range(0, case.length, case.chunk):
        steps = min(case.chunk, case.length - start)
        chunk = {}
        for name, value in case.inputs.items():
            spec = specs[name]
            if spec.role == "lengths":
                # Each chunk says how many of its own steps are valid.
                chunk[name] = np.clip(value - start, 0, steps).astype(value.dtype)
            elif spec.time_axis is not None:
                chunk[name] = np.take(value, range(start, start + steps), axis=spec.time_axis)
            else:
                chunk[name] = value
        outputs, state = runner.step(chunk, state)
        pieces.append(outputs)
    joined = {
        name: pieces[-1][name] if time_axes.get(name) is None
        else np.concatenate([p[name] for p in pieces], axis=time_axes[name])
        for name in pieces[-1]
    }
    return joined, {name + NEXT: value for name, value in state.items()}


def run_stream_case(expected: Mapping[str, np.ndarray], export: ExportUnderTest, case: Case,
                    inputs: Sequence[TensorInfo], method: str) -> CaseResult:
    try:
        outputs, finals = stream(export.stream_runner, case, inputs, export.time_axes)
    except KeyError as exc:
        return CaseResult(case, method, (), error=f"the streaming export has no input or output {exc}")
    except Exception as exc:  # noqa: BLE001 - as in run_case
        return CaseResult(case, method, (), error=_failed_run(exc))
    produced = {**outputs, **finals}
    comparisons = tuple(
        compare_output(name, ref, produced.get(name), export.tolerance, export.time_axes.get(name))
        for name, ref in expected.items()
    )
    return CaseResult(case, method, comparisons)


def _expected(reference: ReferenceRunner, case: Case) -> Arrays:
    try:
        return reference.run(case.inputs)
    except Exception as exc:  # noqa: BLE001 - the source rejecting an input is the user's input problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SourceError(f"the source itself cannot run case {case.name} ({type(exc).__name__}: {first}); "
                          "choose lengths and batches it accepts with --lengths and --batches") from None


def check(
    reference: ReferenceRunner,
    exports: Sequence[ExportUnderTest],
    cases: Sequence[Case],
    progress: ProgressFn | None = None,
    stream_cases: Sequence[Case] = (),
    inputs: Sequence[TensorInfo] = (),
) -> list[ExportResult]:
    """Run every case once on the reference and on every export; compare every output.

    Each of `stream_cases` runs the streaming exports chunk by chunk, and compares what they
    return with the source run on the whole sequence, final states included."""
    per_export: list[list[CaseResult]] = [[] for _ in exports]
    streamed = [e for e in exports if e.stream_runner is not None]
    stream_cases = stream_cases if streamed else ()
    total = len(cases) + len(stream_cases)
    serves = getattr(reference, "serves", None)
    for index, case in enumerate([*cases, *stream_cases]):
        if progress:
            progress(case.name, index, total)
        chunked = case.chunk is not None
        runs = [(r, e) for r, e in zip(per_export, exports) if (e.stream_runner if chunked else e.runner) is not None]
        reason = serves(case.inputs) if serves else ""
        if reason:
            for results, _ in runs:
                results.append(CaseResult(case, "not checked", (), skipped=reason))
            continue
        expected = _expected(reference, case)
        method = reference.method(case.inputs)
        if not chunked:
            for results, export in runs:
                results.append(run_case(expected, export.runner, case, export, method))
            continue
        method = f"{method}, whole sequence"
        try:
            expected.update(reference.final_state(case.inputs))
        except UnsupportedModelError as exc:
            method += f"; final state not checked: {exc}"
        for results, export in runs:
            unchecked = [s for s in export.stream_runner.states if s + NEXT not in expected]
            note = f"; final {', '.join(unchecked)} not checked: the source has no such tensor" \
                if unchecked and "final state not checked" not in method else ""
            results.append(run_stream_case(expected, export, case, inputs, method + note))
    if progress:
        progress("done", total, total)
    return [
        ExportResult(
            e.source, e.source_kind, e.target, e.path, e.runner.device if e.runner else "-", reference.device,
            e.tolerance, tuple(results), error=e.not_runnable, details=dict(e.details), validated=e.runner is not None,
        )
        for e, results in zip(exports, per_export)
    ]
