"""The run step: the same inputs to the reference and to every export, what each returns kept as
a value. Comparing is a separate step (`rnnexport.parity.check`), as Polygraphy separates
`Comparator.run` from `compare_accuracy`, so the reference's outputs could be stored and reused."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnexport.errors import SourceError, UnsupportedModelError, one_line
from rnnexport.model import TensorInfo
from rnnexport.parity.results import Export
from rnnexport.runner import NEXT, Arrays, Probe, ReferenceRunner, Runner, StreamRunner, Timing
from rnnexport.sweep import Case

ProgressFn = Callable[[str, int, int], None]

RUN_FAILED = "the export failed to run: "
# The kind of the case that repeats the first one right after it.
AGAIN = "again"


@dataclass(frozen=True, kw_only=True)
class ExportUnderTest(Export):
    """An export and what runs it; `runner` is None when this machine cannot run the export,
    and `not_runnable` says why (the export is then reported as not validated), or when the
    export itself cannot be read or loaded, and `broken` says why (the export then fails)."""

    runner: Runner | None
    time_axes: Mapping[str, int | None] = field(default_factory=dict)
    not_runnable: str = ""
    stream_runner: StreamRunner | None = None
    broken: str = ""
    probe: Probe | None = None

    @property
    def opened(self) -> tuple[Runner | StreamRunner | Probe | None, ...]:
        """What was opened to run and look inside the export (None where there is none)."""
        return self.runner, self.stream_runner, self.probe


@dataclass(frozen=True)
class Expected:
    """The reference's outputs for one case (for a streaming case, final states included) and how
    it computed them; `skipped` says why it holds no ground truth for the case, when it does not."""

    case: Case
    method: str
    outputs: Arrays = field(default_factory=dict)
    skipped: str = ""


@dataclass(frozen=True)
class ReferenceOutputs:
    """Everything the reference computed, case by case in sweep order (the repeated case and the
    streaming cases included), and its median milliseconds per timed case name; `timing` says how
    it was timed, `eager` why it ran eagerly where it did. Given to `run` in place of a reference
    (read back from a golden file), its cases are the sweep."""

    device: str
    cases: tuple[Expected, ...]
    latency: Mapping[str, float] = field(default_factory=dict)
    timing: str = ""
    eager: str = ""


@dataclass(frozen=True)
class Produced:
    """What one export returned for one case, or why it could not run it."""

    outputs: Arrays = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class ExportOutputs:
    """What one export returned, aligned with the reference's cases: None where the export does not
    take that kind of case (no runner, or no streaming entry points), empty where the reference
    holds no ground truth. `seconds` counts the export's own runs only."""

    device: str
    cases: tuple[Produced | None, ...]
    seconds: float = 0.0
    states: tuple[str, ...] = ()
    latency: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResults:
    """What every side computed; `stopped` says why the sweep ended early, when it did."""

    reference: ReferenceOutputs
    exports: tuple[ExportOutputs, ...]
    stopped: str = ""


# stop(expected, produced by each export) -> True ends the sweep after this case (--fail-fast).
StopFn = Callable[[Expected, Sequence["Produced | None"]], bool]


def closers(*things: object) -> list[Callable[[], None]]:
    """The `close` of each distinct one of `things` that has one (runners, references, probes)."""
    distinct = {id(thing): thing for thing in things}.values()
    return [close for close in (getattr(thing, "close", None) for thing in distinct) if close is not None]


def failed_run(exc: Exception) -> str:
    text = RUN_FAILED + one_line(exc)
    return text if len(text) <= 300 else text[:297] + "..."


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


def expect(reference: ReferenceRunner, case: Case) -> Expected:
    """The reference's outputs for `case`; for a streaming case, on the whole sequence."""
    serves = getattr(reference, "serves", None)
    reason = serves(case.inputs) if serves else ""
    if reason:
        return Expected(case, "not checked", skipped=reason)
    try:
        outputs = reference.run(case.inputs)
    except Exception as exc:  # noqa: BLE001 - the source rejecting an input is the user's input problem
        raise SourceError(f"the source itself cannot run case {case.name} ({one_line(exc)}); "
                          "choose lengths and batches it accepts with --lengths and --batches") from None
    method = reference.method(case.inputs)
    if case.chunk is None:
        return Expected(case, method, outputs)
    method = f"{method}, whole sequence"
    try:
        outputs = {**outputs, **reference.final_state(case.inputs)}
    except UnsupportedModelError as exc:
        method += f"; final state not checked: {exc}"
    return Expected(case, method, outputs)


def produce(export: ExportUnderTest, case: Case, inputs: Sequence[TensorInfo]) -> Produced:
    """What `export` returns for `case`: a streaming case chunk by chunk, with its final state."""
    streaming = case.chunk is not None
    try:
        if streaming:
            outputs, finals = stream(export.stream_runner, case, inputs, export.time_axes)
            return Produced({**outputs, **finals})
        return Produced(export.runner.run(case.inputs))
    except KeyError as exc:
        if streaming:
            return Produced(error=f"the streaming export has no input or output {exc}")
        return Produced(error=f"the export takes an input {exc} that the source does not have "
                              f"(source inputs: {', '.join(case.inputs)})")
    except Exception as exc:  # noqa: BLE001 - an export that cannot run a case fails it, with the reason
        return Produced(error=failed_run(exc))


def sweep(cases: Sequence[Case], stream_cases: Sequence[Case] = ()) -> list[Case]:
    """Every case `run` runs, in order: the first case runs twice in a row (the second time as
    kind `again`): a runtime re-allocates, and so resets, only when a shape changes, so an export
    that keeps state between calls fails there."""
    every = [*cases, *stream_cases]
    if cases:
        every.insert(1, dataclasses.replace(cases[0], name=f"{cases[0].name}, again", kind=AGAIN))
    return every


def timed(case: Case) -> bool:
    """Whether `run` times this case: each full-sequence shape of the sweep once (the repeated
    case and padded variants of a shape are not timed again)."""
    return case.chunk is None and case.kind in ("random", "data")


# Where a reference that costs a trace or an eager run per shape is timed, as the notes say it.
LONGEST_ONLY = "at the longest length of each batch only (a trace or an eager run per shape costs seconds)"


def longest(cases: Sequence[Case]) -> set[str]:
    """The timed case at the longest length of each batch: where a reference that costs a trace
    or an eager run per shape is timed (the latency a deployer of long sequences meets)."""
    found: dict[int, Case] = {}
    for case in filter(timed, cases):
        if case.batch not in found or (case.length or 0) > (found[case.batch].length or 0):
            found[case.batch] = case
    return {case.name for case in found.values()}


def timing(reference: ReferenceRunner, case: Case, outputs: Arrays) -> Timing:
    """How to time the reference at `case` (see `Timing`): its own `timing`, or its `run`."""
    own = getattr(reference, "timing", None)
    if own is not None:
        return own(case.inputs, outputs)
    return Timing(lambda: reference.run(case.inputs), getattr(reference, "runs_as", "the reference's own call"))


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls, in milliseconds; the caller has warmed it up."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.median(samples))


def run(
    reference: ReferenceRunner | ReferenceOutputs,
    exports: Sequence[ExportUnderTest],
    cases: Sequence[Case],
    stream_cases: Sequence[Case] = (),
    inputs: Sequence[TensorInfo] = (),
    progress: ProgressFn | None = None,
    stop: StopFn | None = None,
    latency_repeats: int = 0,
    keep_stream_cases: bool = False,
) -> RunResults:
    """Run every case of `sweep(cases, stream_cases)` once on the reference and on every export
    that takes it, one after the other on one runner per export with nothing reset in between,
    as a deployer calls it. `stream_cases` run only when some export streams (or with
    `keep_stream_cases`, on the reference alone). `reference` may be what a reference computed
    before (`ReferenceOutputs`, whose cases are then the sweep).

    With `latency_repeats`, each export is then called that many more times at each shape of the
    sweep (its own call in the sweep was the warm-up), and the median kept; so is the reference,
    run as a deployer runs the source (`timing`). Where it needs a trace per shape or runs
    eagerly (often the slowest thing by far), it is timed only at the longest length of each
    batch (`longest`). `stop` is asked after each case whether to end the sweep there."""
    recorded = reference if isinstance(reference, ReferenceOutputs) else None
    if recorded is not None:
        every = [expected.case for expected in recorded.cases]
        device = recorded.device
    else:
        streams = keep_stream_cases or any(e.stream_runner is not None for e in exports)
        every = sweep(cases, stream_cases if streams else ())
        device = reference.device
    expected: list[Expected] = []
    produced: list[list[Produced | None]] = [[] for _ in exports]
    seconds = [0.0 for _ in exports]
    reference_ms: dict[str, float] = {}
    hows: dict[str, None] = {}
    eager = ""
    limited = False
    ends = longest(every)
    export_ms: list[dict[str, float]] = [{} for _ in exports]
    stopped = ""
    for index, case in enumerate(every):
        if progress:
            progress(case.name, index, len(every))
        expected.append(recorded.cases[index] if recorded else expect(reference, case))
        measure = latency_repeats > 0 and timed(case) and not expected[-1].skipped
        if measure and recorded is None:
            costly = getattr(reference, "per_shape", lambda _: False)(case.inputs)
            limited = limited or costly
            if case.name in ends or not costly:
                timer = timing(reference, case, expected[-1].outputs)
                reference_ms[case.name] = median_ms(timer.call, latency_repeats)
                hows[timer.how] = None
                eager = eager or timer.eager
        for i, export in enumerate(exports):
            if (export.runner if case.chunk is None else export.stream_runner) is None:
                produced[i].append(None)
            elif expected[-1].skipped:
                produced[i].append(Produced())
            else:
                started = time.perf_counter()
                produced[i].append(produce(export, case, inputs))
                seconds[i] += time.perf_counter() - started
                if measure and not produced[i][-1].error:
                    export_ms[i][case.name] = median_ms(lambda: export.runner.run(case.inputs), latency_repeats)
        if stop is not None and stop(expected[-1], [p[-1] for p in produced]) and index + 1 < len(every):
            stopped = f"stopped at the first failing case ({case.name}): {len(every) - index - 1} case(s) not run"
            break
    if progress:
        progress("done", len(every), len(every))
    if limited:
        hows[LONGEST_ONLY] = None
    return RunResults(
        ReferenceOutputs(device, tuple(expected), *((recorded.latency, recorded.timing, recorded.eager) if recorded
                                                    else (reference_ms, "; ".join(hows), eager))),
        tuple(
            ExportOutputs(e.runner.device if e.runner else "-", tuple(done), elapsed,
                          tuple(e.stream_runner.states) if e.stream_runner else (), ms)
            for e, done, elapsed, ms in zip(exports, produced, seconds, export_ms)
        ),
        stopped,
    )
