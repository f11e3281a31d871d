"""The Python API: `inspect`, `convert`, `validate`. Every entry point funnels into the same steps
(read the source, build the RecurrentModel, export, run the parity sweep) and returns objects.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport import golden, plugins
from rnnexport.console import native_logs_off, native_stderr_silenced
from rnnexport.data import batches, is_stream, shards
from rnnexport.device import Device, resolve_device
from rnnexport.exported import ExportContents
from rnnexport.errors import (
    Interrupted,
    UnsupportedModelError,
    UserError,
)
from rnnexport.model import SourceInfo
from rnnexport.options import ConvertOptions, SourceOptions, ValidateOptions
from rnnexport.tolerance import FLOAT32_TOLERANCE
from rnnexport.parity import ExportResult, ReferenceOutputs, check, closers
from rnnexport.parity.batches import check_stream
from rnnexport.plan import Plan, PlannedSource, SourceLike, Writing, as_source, label as _label, plan_exports
from rnnexport.plugins import OpenedSource, Target
from rnnexport.reports import ParityReport
from rnnexport.sweep import build_cases, build_stream_cases
from rnnexport.under_test import check_names, check_options, exports_under_test, source_side

# progress(message, done, total): total == 0 announces a stage, otherwise counts cases.
Progress = Callable[[str, int, int], None]
# Room left on the disk per export beyond its weights: the graph, signatures and metadata.
SPACE_MARGIN = 4 * 2**20


@dataclass(frozen=True)
class Artifact:
    source: str
    target: str
    path: Path


@dataclass
class ConvertResult:
    """What `convert` wrote, and its parity report (None with `validate=False`)."""

    artifacts: list[Artifact] = field(default_factory=list)
    report: ParityReport | None = None
    # The source that failed first with --fail-fast, when one did: the run stopped after it.
    failed: str = ""

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed

    def __bool__(self) -> bool:
        return self.passed


def _open(source: Path | Any, options: SourceOptions) -> OpenedSource:
    return plugins.find_source(source).open(source, options)


def inspect(source: SourceLike, options: SourceOptions = SourceOptions()) -> SourceInfo:
    """What a source holds and whether it can be exported.

    >>> rnnexport.inspect("samples/gru_fixed.keras").fixed_length
    50
    """
    with native_stderr_silenced(native_logs_off()):
        return _open(as_source(source), options).info


def inspect_export(path: str | Path) -> ExportContents | None:
    """What an export holds: entry points with their dynamic dimensions, recurrent ops, batch
    policy, streaming states and the parity summary stored in it; None when `path` is no export
    (a SavedModel another tool wrote is a source to `inspect`).

    >>> print(rnnexport.inspect_export("exports/lstm_variable.onnx").states[0].holds)
    lstm h
    """
    path = Path(path)
    with native_stderr_silenced(native_logs_off()):
        for target in plugins.targets():
            if target.detect(path):
                contents = target.contents(path)
                if contents is not None:
                    return contents
    return None


def _validate_opened(
    source: Path | Any,
    opened: OpenedSource,
    label: str,
    exports: Sequence[tuple[Target | None, Path]],
    device: Device,
    options: ValidateOptions,
    progress: Progress | None,
) -> list[ExportResult]:
    side = source_side(opened, label, device)
    under_test = exports_under_test(side, exports, device, options.tolerance, options.thresholds)
    sweep, data_set, info = options.sweep, is_stream(options.sweep.data), opened.info
    saving = options.save_golden is not None
    # The exports are closed here only if the sweep or the reference cannot be set up; else by `check`.
    with ExitStack() as opening:
        for close in closers(*(part for e in under_test for part in e.opened)):
            opening.callback(close)
        cases = [] if data_set else build_cases(info.inputs, info.fixed_length, sweep, info.min_length)
        streams = not data_set and (any(e.stream_runner is not None for e in under_test) or (saving and info.causal))
        stream_cases = build_stream_cases(info.inputs, info.fixed_length, sweep) if streams else []
        reference = opened.reference(device)
        opening.pop_all()
    if progress:  # the first case runs twice; a data set streamed from its shards is one case
        what = f"data {sweep.data.name}" if data_set else f"{len(cases) + 1 + len(stream_cases)} cases"
        progress(f"checking {label} on {', '.join(e.target for e in under_test)}: {what}", 0, 0)
    if data_set:  # batch by batch from the shards (`rnnexport.data`), folded as it goes
        return check_stream(reference, under_test, batches(sweep.data, info.inputs, sweep), f"data {sweep.data.name}",
                            info.inputs, opened.layer_outputs, sweep.chunks, progress, options.task)

    def keep(outputs: ReferenceOutputs) -> None:
        from rnnexport.tf import versions

        golden.save(options.save_golden, outputs, source=label, digest=golden.checksum(source),
                    kind=info.kind, inputs=info.inputs, outputs=info.outputs, sweep=golden.sweep_of(options),
                    floor=side.floor, overrides=options.tolerance, min_length=info.min_length, versions=versions(),
                    force=options.force_golden)

    return check(reference, under_test, cases, progress, stream_cases, info.inputs, opened.layer_outputs,
                 options.task, options=check_options(options, keep_stream_cases=saving and info.causal),
                 keep=keep if saving else None)


def _new_report(device: Device, options: ValidateOptions) -> ParityReport:
    from rnnexport.tf import environment, versions

    return ParityReport(device=device.label, seed=options.sweep.seed, versions=versions(), environment=environment())


@dataclass
class _Ready:
    """A source read and checked, with what its exports and its sweep need."""

    planned: PlannedSource
    opened: OpenedSource
    model: Any


def _ready(planned: PlannedSource, options: ConvertOptions, validate: bool, progress: Progress | None) -> _Ready:
    """Everything about one source that can fail before an export is written: reading it, its
    model, its streaming entry points, and the cases its sweep will run."""
    label = planned.label
    if progress:
        progress(f"reading {label}", 0, 0)
    opened = _open(planned.source, options.source)
    if not opened.info.exportable:
        raise UnsupportedModelError(f"{label}: {opened.info.problems[0]}")
    if progress:
        progress(f"building the model of {label}", 0, 0)
    model = opened.recurrent_model()
    if options.export.streaming and model.streaming is None:
        raise UnsupportedModelError(f"{label}: cannot stream: {model.not_streamable}")
    if validate and is_stream(options.validation.sweep.data):
        shards(options.validation.sweep.data)
    elif validate:
        info, sweep = opened.info, options.validation.sweep
        cases = build_cases(info.inputs, info.fixed_length, sweep, info.min_length)
        if options.export.streaming:
            build_stream_cases(info.inputs, info.fixed_length, sweep)
        if all(c.length is not None and c.length < info.min_length for c in cases):
            lengths = ", ".join(str(length) for length in sorted({c.length for c in cases}))
            raise UserError(f"{label}: the source needs at least {info.min_length} steps, so no case of the sweep "
                            f"(length {lengths}) could be checked; ask for longer lengths")
    return _Ready(planned, opened, model)


def _nbytes(variable: Any) -> int:
    dtype = getattr(variable.dtype, "as_numpy_dtype", variable.dtype)
    return int(np.prod(variable.shape)) * np.dtype(dtype).itemsize


def _check_space(directory: Path, ready: Sequence[_Ready], streaming: bool) -> None:
    """Refuse when the disk holding `directory` has less room than the exports' weights take, in
    each format (twice over when streaming, which writes two entry points), with a margin."""
    weights = sum(_nbytes(v) for r in ready for v in r.model.module.variables)
    needed = sum(len(r.planned.exports) for r in ready) * (weights * (2 if streaming else 1) + SPACE_MARGIN)
    existing = next(p for p in [directory, *directory.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UserError(f"{directory}: {free / 2**20:.1f} MiB free on this disk, the exports need about "
                        f"{needed / 2**20:.1f} MiB")


def convert(
    sources: SourceLike | Sequence[SourceLike],
    out: str | Path,
    options: ConvertOptions = ConvertOptions(),
    progress: Progress | None = None,
) -> ConvertResult:
    """Export each source to each target under `out`, then run the parity sweep on every file.

    Everything that can be checked without exporting (the sources, the options, the `data`
    arrays and lengths of the sweep, the destinations and the free space) is checked before the
    first byte is written. `out` ending in a target's suffix names the one export of one source.

    >>> result = rnnexport.convert("samples/lstm_variable.keras", "exports")
    >>> [a.path.name for a in result.artifacts], result.report.passed
    (['lstm_variable.savedmodel'], True)
    """
    with native_stderr_silenced(native_logs_off()):
        return prepare(sources, out, options, progress).write(progress)


@dataclass
class Prepared:
    """A conversion whose sources are read and checked, nothing written yet: `write` writes it.
    Several conversions prepared before the first is written fail together, before any byte."""

    plan: Plan
    options: ConvertOptions
    device: Device | None
    ready: list[_Ready]

    def not_run(self, first: str) -> list[ExportResult]:
        """Failing entries for every export of this conversion, not run because the source `first`
        failed before it (--fail-fast)."""
        return _not_run(self.ready, first)

    def write(self, progress: Progress | None = None) -> ConvertResult:
        """Build every export, install them, then validate them; interrupted, raise `Interrupted`
        naming the exports installed. With --fail-fast, the sources after the first that fails
        are not checked (`ConvertResult.failed` names it)."""
        options, device = self.options, self.device
        result = ConvertResult(report=_new_report(device, options.validation) if device else None)
        try:
            with Writing(self.plan.directory) as writing:
                # Every export is built before the first is installed: one the target cannot
                # write leaves none behind.
                with writing.temporary() as tmp:
                    built = [_build(each, Path(tmp) / str(i), options, progress) for i, each in enumerate(self.ready)]
                    for each, files in zip(self.ready, built):
                        for target, each_file, dest in files:
                            writing.install(each_file, dest, options.force)
                            result.artifacts.append(Artifact(each.planned.label, target.name, dest))
                if device is not None:
                    for each in self.ready:
                        if result.failed:
                            result.report.exports += _not_run([each], result.failed)
                            continue
                        _validate_written(each, device, options.validation, result, progress)
                        if options.validation.fail_fast and not result.report.passed:
                            result.failed = each.planned.label
        except KeyboardInterrupt as exc:
            raise Interrupted(getattr(exc, "signum", signal.SIGINT),
                              tuple(a.path for a in result.artifacts)) from None
        return result


def _not_run(ready: Sequence[_Ready], first: str) -> list[ExportResult]:
    return [ExportResult.not_run(each.planned.label, export.target.name, str(export.path), first)
            for each in ready for export in each.planned.exports]


def prepare(sources: SourceLike | Sequence[SourceLike], out: str | Path, options: ConvertOptions = ConvertOptions(),
            progress: Progress | None = None) -> Prepared:
    """Read and check everything `convert` needs before it writes: the plan, every source and
    its model, the sweep's cases, the free space."""
    plan = plan_exports(sources, out, options)
    check_names(options.validation)
    golden.check_saveable(options.validation, len(plan.sources), options.validate)
    if progress:
        progress("loading TensorFlow", 0, 0)
    device = resolve_device(options.validation.device) if options.validate else None
    ready = []
    for planned in plan:
        ready.append(_ready(planned, options, device is not None, progress))
    check_names(options.validation, [o.name for r in ready for o in r.opened.info.outputs])
    _check_space(plan.directory, ready, options.export.streaming)
    return Prepared(plan, options, device, ready)


def _naming(exc: UserError, label: str, target: str) -> UserError:
    """`exc` of a target's export, its message prefixed by the source and the target unless it
    names the source already: every refusal names the file."""
    if not str(exc).startswith(label):
        exc.args = (f"{label} to {target}: {exc}", *exc.args[1:])
        exc.cli_message = f"{label} to {target}: {exc.cli_message}"
    return exc


def _build(ready: _Ready, tmp: Path, options: ConvertOptions, progress: Progress | None
           ) -> list[tuple[Target, Path, Path]]:
    """Write each export of a source under `tmp`: (target, file built, its destination)."""
    label, streaming = ready.planned.label, options.export.streaming
    built = []
    for export in ready.planned.exports:
        target, dest = export.target, export.path
        if progress:
            progress(f"exporting {label} to {target.name}", 0, 0)
        where = tmp / target.name
        where.mkdir(parents=True)
        try:
            target.export(ready.model, where / dest.name, export.options, streaming)
        except UserError as exc:
            raise _naming(exc, label, target.name) from None
        built += [(target, each, dest.with_name(each.name)) for each in target.files(where / dest.name, streaming)]
    return built


def _validate_written(ready: _Ready, device: Device, options: ValidateOptions, result: ConvertResult,
                      progress: Progress | None) -> None:
    label = ready.planned.label
    if progress:
        progress(f"opening the exports of {label}", 0, 0)
    dests = [(export.target, export.path) for export in ready.planned.exports]
    checked = _validate_opened(ready.planned.source, ready.opened, label, dests, device, options, progress)
    if progress:
        progress(f"recording the verdict in the exports of {label}", 0, 0)
    for (target, dest), export in zip(dests, checked):
        target.record_parity(dest, export.summary())
    result.report.exports += checked


def validate(
    source: SourceLike,
    exports: Sequence[str | Path],
    options: ValidateOptions = ValidateOptions(),
    source_options: SourceOptions = SourceOptions(),
    progress: Progress | None = None,
) -> ParityReport:
    """Check existing exports against their source over the parity sweep.

    >>> report = rnnexport.validate("model.h5", ["exports/model.savedmodel"])
    >>> report.passed, report.failures()
    (True, [])
    """
    with native_stderr_silenced(native_logs_off()):
        return _validate(source, exports, options, source_options, progress)


def _validate(source: SourceLike, exports: Sequence[str | Path], options: ValidateOptions,
              source_options: SourceOptions, progress: Progress | None) -> ParityReport:
    source = as_source(source)
    paths = [Path(p) for p in exports]
    check_names(options)
    golden.check_saveable(options, 1, True)
    if progress:
        progress("loading TensorFlow", 0, 0)
    device = resolve_device(options.device)
    report = _new_report(device, options)
    label = _label(source)
    if progress:
        progress(f"reading {label}", 0, 0)
    try:
        opened = _open(source, source_options)
    except UserError as exc:
        # The gate reports a source it cannot read as a failure of every export it was given.
        report.exports += [_unchecked(label, path, device, f"the source cannot be read: {exc}") for path in paths]
        return report
    check_names(options, [o.name for o in opened.info.outputs])
    if progress:
        progress(f"opening the exports of {label}", 0, 0)
    report.exports += _validate_opened(source, opened, label, [(None, p) for p in paths], device, options, progress)
    return report


def _unchecked(label: str, path: Path, device: Device, reason: str) -> ExportResult:
    try:
        target = plugins.find_target_for(path).name
    except UserError:
        target = "unknown"
    return ExportResult(source=label, source_kind="unknown", target=target, path=str(path),
                        tolerance=FLOAT32_TOLERANCE[device.kind], device="-", reference_device=device.label, cases=(),
                        error=reason)
