"""Parity over an evaluation set streamed in batches: each batch run on the reference and on every
export, compared, folded into one case and into running statistics (`ExportResult.details["data"]`,
see `rnnexport.parity.statistics`), then let go, so that memory stays flat however many rows the
set holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import numpy as np

from rnnexport.model import TensorInfo
from rnnexport.parity.check import JUDGED, compare_run
from rnnexport.parity.compare import compare_output
from rnnexport.parity.decisions import OutputQuality, Scores, class_kinds, scores
from rnnexport.parity.drift import locate
from rnnexport.parity.results import CaseResult, ExportResult, OutputComparison
from rnnexport.parity.run import ExportUnderTest, ProgressFn, closers, expect, produce, run
from rnnexport.parity.statistics import OutputStatistics, statistics, summary
from rnnexport.runner import LayerOutputs, ReferenceRunner
from rnnexport.sweep import Case

def _fold(a: OutputComparison | None, b: OutputComparison, rows: int) -> OutputComparison:
    """Two batches' comparisons of one output as one: the worst of each number, the first reason."""
    if a is None:
        return replace(b, reference_shape=(rows, *b.reference_shape[1:]),
                       export_shape=None if b.export_shape is None else (rows, *b.export_shape[1:]))

    def worst(x: float | None, y: float | None) -> float | None:
        return y if x is None else x if y is None else max(x, y)

    steps = [s for s in (a.first_bad_step, b.first_bad_step) if s is not None]
    longer = max(a.reference_shape[1:], b.reference_shape[1:])
    # The worst element's row counts from the first batch's first row (mean and percentiles are in details.data).
    later = b.worst_index and (b.worst_index[0] + a.reference_shape[0], *b.worst_index[1:])
    ratio, index = max(((a.worst_ratio, a.worst_index), (b.worst_ratio, later)),
                       key=lambda found: -1.0 if found[0] is None else found[0])
    return OutputComparison(
        a.name, a.passed and b.passed, (a.reference_shape[0] + rows, *longer),
        None if a.export_shape is None or b.export_shape is None else (a.export_shape[0] + rows, *longer),
        worst(a.max_abs, b.max_abs), worst(a.max_rel, b.max_rel), a.nonfinite_reference + b.nonfinite_reference,
        a.nonfinite_export + b.nonfinite_export, min(steps) if steps else None, worst(a.needed_atol, b.needed_atol),
        a.reason or b.reason, worst_ratio=ratio, worst_index=index)


@dataclass
class _Running:
    """One export's findings so far."""

    outputs: dict[str, OutputComparison] = field(default_factory=dict)
    stats: dict[str, OutputStatistics] = field(default_factory=dict)
    error: str = ""
    first_failing: CaseResult | None = None
    seconds: float = 0.0
    # A quantized export's decisions, pooled batch by batch; which outputs are class scores is
    # read from the first batch (the set is never held whole).
    kinds: dict[str, str] | None = None
    scores: dict[str, Scores] = field(default_factory=dict)
    by_length: dict[str, dict[int, Scores]] = field(default_factory=dict)

    def score(self, case: Case, reference: dict, produced: dict, task: str | None) -> None:
        if self.kinds is None:
            self.kinds = class_kinds([reference], task)
        for name, ref in reference.items():
            exp = produced.get(name)
            if exp is None or exp.shape != ref.shape or not (np.isfinite(ref).all() and np.isfinite(exp).all()):
                continue
            found = scores(ref, exp, self.kinds.get(name))
            self.scores[name] = self.scores.get(name, Scores()) + found
            if case.length is not None:
                lengths = self.by_length.setdefault(name, {})
                lengths[case.length] = lengths.get(case.length, Scores()) + found

    def quality(self, export: ExportUnderTest) -> tuple[OutputQuality, ...]:
        if export.thresholds is None:
            return ()
        return tuple(OutputQuality.judged(name, (self.kinds or {}).get(name), total,
                                          tuple(sorted(self.by_length.get(name, {}).items())), export.thresholds,
                                          export.details.get("calibration", ""))
                     for name, total in self.scores.items())


def check_stream(reference: ReferenceRunner, exports: Sequence[ExportUnderTest], batches: Iterable[Case],
                 name: str, inputs: Sequence[TensorInfo] = (), layer_outputs: LayerOutputs | None = None,
                 chunks: Sequence[int] = (), progress: ProgressFn | None = None,
                 task: str | None = None) -> list[ExportResult]:
    """Every batch through the reference and each export, folded into one case named `name` per
    export. Streaming exports are also fed the first batch in `chunks`; a failing export is
    located on its first failing batch; a quantized one is judged by its decisions over every
    batch (`decisions`). Everything opened is closed at the end."""
    import time

    with ExitStack() as stack:
        for close in closers(reference, *(part for e in exports for part in e.opened)):
            stack.callback(close)
        running = [_Running() for _ in exports]
        rows, longest, method, first, count, skipped = 0, None, "", None, 0, ""
        for case in batches:
            count += 1
            if progress:
                progress(case.name, 0, 0)
            expected = expect(reference, case)
            if expected.skipped:
                skipped = skipped or expected.skipped
                continue
            first = first or replace(case, inputs=dict(case.inputs))
            rows, method = rows + case.batch, method or expected.method
            if case.length is not None:
                longest = max(longest or 0, case.length)
            for export, state in zip(exports, running):
                if export.runner is None or state.error:
                    continue
                started = time.perf_counter()
                produced = produce(export, case, inputs)
                state.seconds += time.perf_counter() - started
                if produced.error:
                    state.error = f"{case.name}: {produced.error}"
                    continue
                tolerance = export.tolerance if export.thresholds is None else JUDGED
                compared = tuple(compare_output(n, ref, produced.outputs.get(n), tolerance.of(n),
                                                export.time_axes.get(n)) for n, ref in expected.outputs.items())
                if export.thresholds is not None:
                    state.score(case, expected.outputs, produced.outputs, task)
                for each in compared:
                    state.outputs[each.name] = _fold(state.outputs.get(each.name), each, case.batch)
                statistics([(expected.outputs, produced.outputs)], export.tolerance, into=state.stats)
                if state.first_failing is None and not all(compared):
                    state.first_failing = CaseResult(case, expected.method, compared)
        whole = Case(name, "data", rows, longest, {})
        streamed = _streamed(reference, exports, first, chunks, inputs) if first is not None else [() for _ in exports]
        results = []
        for export, state, more in zip(exports, running, streamed):
            cases = (CaseResult(whole, method, tuple(state.outputs.values()), error=state.error,
                                skipped="" if rows else skipped or "the data set holds no rows"), *more)
            judged = replace(export, details={**export.details, "data": summary(state.stats, rows, count)})
            drift = locate([state.first_failing], export, layer_outputs) if state.first_failing else None
            results.append(ExportResult.of(
                judged, device=export.runner.device if export.runner else "-",
                reference_device=reference.device, cases=cases, error=export.broken or export.not_runnable,
                validated=not export.not_runnable, seconds=state.seconds, drift=drift,
                quality=state.quality(export)))
        return results


def _streamed(reference: ReferenceRunner, exports: Sequence[ExportUnderTest], first: Case, chunks: Sequence[int],
              inputs: Sequence[TensorInfo]) -> list[tuple[CaseResult, ...]]:
    """The streaming exports' chunked runs on the first batch, compared with the whole sequence."""
    if first.length is None or not chunks or not any(e.stream_runner is not None for e in exports):
        return [() for _ in exports]
    cases = [Case(f"stream chunk={c} {first.name}", "streaming", first.batch, first.length, first.inputs, c)
             for c in chunks]
    ran = run(reference, exports, [], cases, inputs)
    return [compare_run(ran.reference, outputs, e.tolerance, e.time_axes) for e, outputs in zip(exports, ran.exports)]
