"""The compare step, and `check`: run, compare, locate, and close everything that was opened."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import numpy as np

from rnnexport.model import TensorInfo
from rnnexport.parity.compare import compare_output, output_stats
from rnnexport.parity.decisions import judge
from rnnexport.parity.drift import locate, rank_by_snr
from rnnexport.parity.latency import Latency, LatencyGate, ShapeLatency
from rnnexport.parity.results import CaseResult, ExportResult, OutputStats
from rnnexport.parity.run import (
    Expected,
    ExportOutputs,
    ExportUnderTest,
    Produced,
    ProgressFn,
    ReferenceOutputs,
    StopFn,
    closers,
    run,
)
from rnnexport.parity.statistics import statistics, summary
from rnnexport.runner import NEXT, LayerOutputs, ReferenceRunner
from rnnexport.sweep import Case
from rnnexport.tolerance import Tolerance


# A quantized export's cases compare shapes and finiteness only; its thresholds judge the values.
JUDGED = Tolerance(atol=float("inf"), rtol=0.0)


@dataclass(frozen=True)
class CheckOptions:
    """How `check` runs beyond the sweep itself. `fail_fast` ends the sweep at the first case
    some export fails; `latency_repeats` timed calls per shape after the sweep's own (0: no
    latency); `gates` the latency each export must meet, by target name or `*`;
    `latency_against` names what the ratios compare with; `keep_stream_cases` runs the streaming
    cases on the reference even when no export streams (for a golden file)."""

    fail_fast: bool = False
    latency_repeats: int = 0
    gates: Mapping[str, LatencyGate] = field(default_factory=dict)
    latency_against: str = "source"
    keep_stream_cases: bool = False


def _compare_case(expected: Expected, produced: Produced, states: Sequence[str], tolerance: Tolerance,
                  time_axes: Mapping[str, int | None]) -> CaseResult:
    case, method = expected.case, expected.method
    if expected.skipped:
        return CaseResult(case, method, (), skipped=expected.skipped)
    if case.chunk is not None and "final state not checked" not in method:
        unchecked = [s for s in states if s + NEXT not in expected.outputs]
        if unchecked:
            method += f"; final {', '.join(unchecked)} not checked: the source has no such tensor"
    if produced.error:
        return CaseResult(case, method, (), error=produced.error)
    comparisons = tuple(
        compare_output(name, ref, produced.outputs.get(name), tolerance.of(name), time_axes.get(name))
        for name, ref in expected.outputs.items()
    )
    return CaseResult(case, method, comparisons)


def compare_run(reference: ReferenceOutputs, outputs: ExportOutputs, tolerance: Tolerance,
                time_axes: Mapping[str, int | None]) -> tuple[CaseResult, ...]:
    """One export's outputs against the reference's, case by case, within `tolerance`."""
    return tuple(
        _compare_case(expected, produced, outputs.states, tolerance, time_axes)
        for expected, produced in zip(reference.cases, outputs.cases) if produced is not None
    )


def output_errors(reference: ReferenceOutputs, outputs: ExportOutputs) -> tuple[OutputStats, ...]:
    """Each output's absolute error over every case where the export returned it at the
    reference's shape (final states of streaming cases included, under their own names)."""
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for expected, produced in zip(reference.cases, outputs.cases):
        if produced is None or produced.error or expected.skipped:
            continue
        for name, ref in expected.outputs.items():
            got = produced.outputs.get(name)
            pairs.setdefault(name, [])
            if got is not None and got.shape == ref.shape:
                pairs[name].append((ref, got))
    return tuple(output_stats(name, found) for name, found in pairs.items())


def latency(reference: ReferenceOutputs, outputs: ExportOutputs, repeats: int, gate: LatencyGate,
            against: str) -> Latency | None:
    """The export's median latency per timed case beside the reference's (None: nothing timed)."""
    if not outputs.latency:
        return None
    by_name = {e.case.name: e.case for e in reference.cases}
    shapes = tuple(ShapeLatency(name, by_name[name].batch, by_name[name].length, ms, reference.latency.get(name))
                   for name, ms in outputs.latency.items())
    return Latency(repeats, shapes, gate, against, reference.timing, reference.eager)


def fails_any(exports: Sequence[ExportUnderTest]) -> StopFn:
    """For --fail-fast: whether some export fails the case just run."""

    def stop(expected: Expected, produced: Sequence[Produced | None]) -> bool:
        return any(p is not None and not _compare_case(expected, p, (), JUDGED if e.thresholds is not None else e.tolerance,
                                                       e.time_axes)
                   for e, p in zip(exports, produced))

    return stop


def check(
    reference: ReferenceRunner | ReferenceOutputs,
    exports: Sequence[ExportUnderTest],
    cases: Sequence[Case],
    progress: ProgressFn | None = None,
    stream_cases: Sequence[Case] = (),
    inputs: Sequence[TensorInfo] = (),
    layer_outputs: LayerOutputs | None = None,
    task: str | None = None,
    options: CheckOptions = CheckOptions(),
    keep: Callable[[ReferenceOutputs], None] | None = None,
) -> list[ExportResult]:
    """Run every case once on the reference and on every export; compare every output. `keep`
    is given what the reference computed (to save as a golden file) before any comparison.

    Each of `stream_cases` runs the streaming exports chunk by chunk, and compares what they
    return with the source run on the whole sequence, final states included. A failing export is
    then located: the first time step, and with `layer_outputs`, the first layer that drifts.
    The `--data` case's error statistics go in the result's `details["data"]`.
    A quantized export (with `thresholds`) is judged by decisions instead of its tolerance: every
    output pooled over the cases (`decisions.judge`, outputs declared class scores by `task`), its
    layers ranked by SNR.
    The reference and every runner and probe are closed at the end, also when the run raises."""
    with ExitStack() as stack:
        for close in closers(reference, *(part for e in exports for part in e.opened)):
            stack.callback(close)
        ran = run(reference, exports, cases, stream_cases, inputs, progress,
                  stop=fails_any(exports) if options.fail_fast else None, latency_repeats=options.latency_repeats,
                  keep_stream_cases=options.keep_stream_cases)
        if keep is not None:
            keep(ran.reference)
        results = []
        for export, outputs in zip(exports, ran.exports):
            judged = export.thresholds is not None
            compared = compare_run(ran.reference, outputs, JUDGED if judged else export.tolerance, export.time_axes)
            data = [(e, p) for e, p in zip(ran.reference.cases, outputs.cases)
                    if e.case.kind == "data" and p is not None and not p.error and not e.skipped]
            if data:
                stats = statistics(((e.outputs, p.outputs) for e, p in data), export.tolerance)
                rows = sum(e.case.batch for e, _ in data)
                export = replace(export, details={**export.details, "data": summary(stats, rows, len(data))})
            quality, ranked = (), ()
            if judged:
                pairs = [(expected.case.length, expected.outputs, produced.outputs)
                         for expected, produced in zip(ran.reference.cases, outputs.cases)
                         if produced is not None and not produced.error and not expected.skipped]
                quality = judge(pairs, export.thresholds, task, export.details.get("calibration", ""))
                ranked = rank_by_snr(compared, export, layer_outputs)
            gate = options.gates.get(export.target, options.gates.get("*", LatencyGate()))
            results.append(ExportResult.of(
                export, device=outputs.device, reference_device=ran.reference.device, cases=compared,
                error=export.broken or export.not_runnable, validated=not export.not_runnable,
                seconds=outputs.seconds, drift=locate(compared, export, layer_outputs),
                quality=quality, layers_by_snr=ranked,
                outputs=output_errors(ran.reference, outputs), stopped=ran.stopped,
                latency=latency(ran.reference, outputs, options.latency_repeats, gate, options.latency_against),
            ))
        return results
