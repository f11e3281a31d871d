"""The parity engine: same inputs to the reference and to each export, every output compared.

It knows nothing of formats. Results are objects: truthy when they pass, serialisable, and when
they fail they say which case and output drifted, from which time step, and the tolerance that
would have been needed to pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport.errors import SourceError, UnsupportedModelError
from rnnexport.tolerance import Tolerance
from rnnexport.model import TensorInfo
from rnnexport.runner import NEXT, Arrays, LayerOutputs, Probe, ReferenceRunner, Runner, StreamRunner
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
    # None where no element compares (every one NaN or Inf): JSON has no NaN.
    max_abs = float(np.max(diff[finite])) if finite.any() else None
    max_rel = float(np.max(rel[finite])) if finite.any() else None
    needed = float(max(0.0, np.max(excess[finite]))) if finite.any() else None
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "matches": self.matches, "max_abs": self.max_abs,
                "first_bad_step": self.first_bad_step, "tensor": self.tensor}


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
    seconds: float = 0.0
    drift: Drift | None = None

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
            "drift": self.drift.to_dict() if self.drift else None,
            "timing": {"seconds": round(self.seconds, 3)},
            "cases": [c.to_dict() for c in self.cases],
        }


@dataclass(frozen=True)
class ExportUnderTest:
    """An export and its runner; `runner` is None when this machine cannot run the export,
    and `not_runnable` says why (the export is then reported as not validated), or when the
    export itself cannot be read or loaded, and `broken` says why (the export then fails)."""

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
    broken: str = ""
    probe: Probe | None = None


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
    layer_outputs: LayerOutputs | None = None,
) -> list[ExportResult]:
    """Run every case once on the reference and on every export; compare every output.

    Each of `stream_cases` runs the streaming exports chunk by chunk, and compares what they
    return with the source run on the whole sequence, final states included. A failing export is
    then located: the first time step, and with `layer_outputs`, the first layer that drifts."""
    per_export: list[list[CaseResult]] = [[] for _ in exports]
    seconds = [0.0 for _ in exports]
    streamed = [e for e in exports if e.stream_runner is not None]
    stream_cases = stream_cases if streamed else ()
    total = len(cases) + len(stream_cases)
    serves = getattr(reference, "serves", None)
    for index, case in enumerate([*cases, *stream_cases]):
        if progress:
            progress(case.name, index, total)
        chunked = case.chunk is not None
        runs = [(i, e) for i, e in enumerate(exports) if (e.stream_runner if chunked else e.runner) is not None]
        reason = serves(case.inputs) if serves else ""
        if reason:
            for i, _ in runs:
                per_export[i].append(CaseResult(case, "not checked", (), skipped=reason))
            continue
        expected = _expected(reference, case)
        method = reference.method(case.inputs)
        if not chunked:
            for i, export in runs:
                started = time.perf_counter()
                per_export[i].append(run_case(expected, export.runner, case, export, method))
                seconds[i] += time.perf_counter() - started
            continue
        method = f"{method}, whole sequence"
        try:
            expected.update(reference.final_state(case.inputs))
        except UnsupportedModelError as exc:
            method += f"; final state not checked: {exc}"
        for i, export in runs:
            unchecked = [s for s in export.stream_runner.states if s + NEXT not in expected]
            note = f"; final {', '.join(unchecked)} not checked: the source has no such tensor" \
                if unchecked and "final state not checked" not in method else ""
            started = time.perf_counter()
            per_export[i].append(run_stream_case(expected, export, case, inputs, method + note))
            seconds[i] += time.perf_counter() - started
    if progress:
        progress("done", total, total)
    return [
        ExportResult(
            e.source, e.source_kind, e.target, e.path, e.runner.device if e.runner else "-", reference.device,
            e.tolerance, tuple(results), error=e.broken or e.not_runnable, details=dict(e.details),
            validated=not e.not_runnable, seconds=elapsed, drift=locate(results, e, layer_outputs),
        )
        for e, results, elapsed in zip(exports, per_export, seconds)
    ]


def _aligned(value: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """`value` laid out as `reference` (both without size-1 axes), allowing time-major layouts."""
    if value.shape == reference.shape:
        return value
    if value.ndim >= 2 and (value.shape[1], value.shape[0], *value.shape[2:]) == reference.shape:
        return np.swapaxes(value, 0, 1)
    return None


def compare_layers(layers: Sequence[tuple[str, str, np.ndarray]], tensors: Mapping[str, np.ndarray],
                   tolerance: Tolerance) -> tuple[LayerDrift, ...]:
    """Each layer's output against the export's intermediate tensor closest to it. A layer matches
    when some tensor of the export reproduces it within `tolerance`."""
    candidates = {name: np.squeeze(value) for name, value in tensors.items()
                  if np.issubdtype(value.dtype, np.floating) and value.size > 1}
    found = []
    for name, kind, output in layers:
        reference = np.squeeze(output)
        time_axis = None
        if output.ndim >= 3 and output.shape[1] > 1:
            time_axis = 1 if output.shape[0] > 1 else 0
        best: tuple[tuple[bool, float], OutputComparison, str] | None = None
        for tensor, value in candidates.items():
            aligned = _aligned(value, reference)
            if aligned is None:
                continue
            comparison = compare_output(name, reference, aligned, tolerance, time_axis)
            error = comparison.max_abs if comparison.max_abs is not None and np.isfinite(comparison.max_abs) else np.inf
            rank = (not comparison.passed, error)
            if best is None or rank < best[0]:
                best = (rank, comparison, tensor)
        if best is None:
            found.append(LayerDrift(name, kind, None))
        else:
            _, comparison, tensor = best
            found.append(LayerDrift(name, kind, comparison.passed, comparison.max_abs, comparison.first_bad_step,
                                    tensor))
    return tuple(found)


def _rows(inputs: Mapping[str, np.ndarray], batch: int | None) -> dict[str, np.ndarray]:
    if batch is None:
        return dict(inputs)
    return {name: np.resize(value, (batch, *value.shape[1:])) for name, value in inputs.items()}


def locate(results: Sequence[CaseResult], export: ExportUnderTest, layer_outputs: LayerOutputs | None
           ) -> Drift | None:
    """Where a failing export drifts first, from its first case with a failing comparison."""
    failing = next((c for c in results if not c.skipped and not c.error and not c), None)
    if failing is None:
        return None
    bad = [o for o in failing.outputs if not o]
    output = min(bad, key=lambda o: (o.first_bad_step is None, o.first_bad_step or 0))
    note, layers = "", ()
    if failing.case.chunk is not None:
        note = "the first failing case is a streaming one; layers are compared on full sequences"
    elif export.probe is None:
        note = f"{export.target} exports do not show their intermediate tensors"
    elif layer_outputs is None:
        note = "the source does not give its layers' outputs"
    else:
        inputs = _rows(failing.case.inputs, export.probe.batch)
        try:
            layers = compare_layers(layer_outputs(inputs), export.probe.tensors(inputs), export.tolerance)
        except Exception as exc:  # noqa: BLE001 - locating is a diagnosis; its failure must not hide the verdict
            note = f"comparing layers failed: {_failed_run(exc).removeprefix('the export failed to run: ')}"
    return Drift(failing.case.name, output.name, output.first_bad_step, layers, note)
