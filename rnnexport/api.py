"""The Python API: `inspect`, `convert`, `validate`. Every entry point funnels into the same steps
(read the source, build the RecurrentModel, export, run the parity sweep) and returns objects.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport import plugins, tolerance
from rnnexport.device import Device, resolve_device
from rnnexport.errors import NotRunnableError, OutputExistsError, UnsupportedModelError, UserError, one_line
from rnnexport.model import SourceInfo
from rnnexport.options import ConvertOptions, SourceOptions, ValidateOptions
from rnnexport.tolerance import FLOAT32_TOLERANCE
from rnnexport.parity import ExportResult, ExportUnderTest, check, closers
from rnnexport.plan import SourceLike, as_source, label as _label, plan_exports
from rnnexport.plugins import ExportDetails, OpenedSource, Target
from rnnexport.reports import ParityReport
from rnnexport.sweep import build_cases, build_stream_cases

# progress(message, done, total): total == 0 announces a stage, otherwise counts cases.
Progress = Callable[[str, int, int], None]


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
    return _open(as_source(source), options).info


def _install(built: Path, dest: Path, force: bool) -> None:
    """Move a complete export into place; an existing one is removed only after that succeeds."""
    old = None
    if dest.exists():
        if not force:
            raise OutputExistsError(f"{dest}: already exists; pass --force to overwrite")
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        dest.rename(old)
    built.rename(dest)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _broken(exc: Exception) -> str:
    """Why an export could not be set up, in one line: the gate reports it and goes on."""
    if isinstance(exc, UserError):
        return str(exc)
    return f"cannot read the export: {one_line(exc)}"


def _exports_under_test(
    opened: OpenedSource, label: str, exports: Sequence[tuple[Target | None, Path]], device: Device,
    options: ValidateOptions
) -> list[ExportUnderTest]:
    """Set up every export; one that cannot be read or loaded becomes a failing entry with the reason."""
    time_axes = {o.name: o.time_axis for o in opened.info.outputs}
    under_test = []
    for target, path in exports:
        runner, stream_runner, probe, not_runnable, broken = None, None, None, "", ""
        default, details = FLOAT32_TOLERANCE[device.kind], ExportDetails()
        try:
            if target is None:
                target = plugins.find_target_for(path)
            runner = target.runner(path, device)
            stream_runner = target.stream_runner(path, device)
            probe = target.probe(path, device)
            default = target.default_tolerance(device, path)
            details = ExportDetails(**target.describe(path))
            if stream_runner:
                details["streaming_states"] = stream_runner.states
            if opened.info.min_length > 1:
                details["shortest_length"] = opened.info.min_length
        except NotRunnableError as exc:
            not_runnable = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken export fails its own check, never the whole run
            broken = _broken(exc)
            for close in closers(runner, stream_runner):
                close()
            runner = stream_runner = None
        name = target.name if target is not None else "unknown"
        under_test.append(ExportUnderTest(
            source=label,
            source_kind=opened.info.kind,
            target=name,
            path=str(path),
            runner=runner,
            tolerance=tolerance.resolve(name, default, opened.tolerance_floor(device), options.tolerance, device.kind),
            time_axes=time_axes,
            details=details,
            not_runnable=not_runnable,
            stream_runner=stream_runner,
            broken=broken,
            probe=probe,
        ))
    return under_test


def _validate_opened(
    opened: OpenedSource,
    label: str,
    exports: Sequence[tuple[Target | None, Path]],
    device: Device,
    options: ValidateOptions,
    progress: Progress | None,
) -> list[ExportResult]:
    under_test = _exports_under_test(opened, label, exports, device, options)
    # The exports are closed here only if the sweep or the reference cannot be set up; else by `check`.
    with ExitStack() as opening:
        for close in closers(*(part for e in under_test for part in e.opened)):
            opening.callback(close)
        cases = build_cases(opened.info.inputs, opened.info.fixed_length, options.sweep, opened.info.min_length)
        stream_cases = []
        if any(e.stream_runner is not None for e in under_test):
            stream_cases = build_stream_cases(opened.info.inputs, opened.info.fixed_length, options.sweep)
        reference = opened.reference(device)
        opening.pop_all()
    return check(reference, under_test, cases, progress, stream_cases, opened.info.inputs, opened.layer_outputs)


def _new_report(device: Device, options: ValidateOptions) -> ParityReport:
    from rnnexport.tf import environment, versions

    return ParityReport(device=device.label, seed=options.sweep.seed, versions=versions(), environment=environment())


def convert(
    sources: SourceLike | Sequence[SourceLike],
    out: str | Path,
    options: ConvertOptions = ConvertOptions(),
    progress: Progress | None = None,
) -> ConvertResult:
    """Export each source to each target under `out`, then run the parity sweep on every file.

    >>> result = rnnexport.convert("samples/lstm_variable.keras", "exports")
    >>> [a.path.name for a in result.artifacts], result.report.passed
    (['lstm_variable.savedmodel'], True)
    """
    plan = plan_exports(sources, out, options)
    out, streaming = Path(out), options.export.streaming
    tolerance.check_targets(options.validation.tolerance, (t.name for t in plugins.targets()))
    if progress:
        progress("loading TensorFlow", 0, 0)
    device = resolve_device(options.validation.device) if options.validate else None
    result = ConvertResult(report=_new_report(device, options.validation) if device else None)
    out.mkdir(parents=True, exist_ok=True)
    for planned in plan:
        label = planned.label
        if progress:
            progress(f"reading {label}", 0, 0)
        opened = _open(planned.source, options.source)
        if not opened.info.exportable:
            raise UnsupportedModelError(f"{label}: {opened.info.problems[0]}")
        model = opened.recurrent_model()
        if streaming and model.streaming is None:
            raise UnsupportedModelError(f"{label}: cannot stream: {model.not_streamable}")
        for export in planned.exports:
            target, dest = export.target, export.path
            if progress:
                progress(f"exporting {label} to {target.name}", 0, 0)
            with tempfile.TemporaryDirectory(dir=out, prefix=".rnnexport-") as tmp:
                built = Path(tmp) / dest.name
                target.export(model, built, export.options, streaming)
                for each in target.files(built, streaming):
                    _install(each, dest.with_name(each.name), options.force)
                    result.artifacts.append(Artifact(label, target.name, dest.with_name(each.name)))
        if device is not None:
            if progress:
                progress(f"validating {label}", 0, 0)
            dests = [(export.target, export.path) for export in planned.exports]
            checked = _validate_opened(opened, label, dests, device, options.validation, progress)
            for (target, dest), export in zip(dests, checked):
                target.record_parity(dest, export.summary())
            result.report.exports += checked
    return result


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
    source = as_source(source)
    paths = [Path(p) for p in exports]
    tolerance.check_targets(options.tolerance, (t.name for t in plugins.targets()))
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
    if progress:
        progress(f"validating {label}", 0, 0)
    report.exports += _validate_opened(opened, label, [(None, p) for p in paths], device, options, progress)
    return report


def _unchecked(label: str, path: Path, device: Device, reason: str) -> ExportResult:
    try:
        target = plugins.find_target_for(path).name
    except UserError:
        target = "unknown"
    return ExportResult(source=label, source_kind="unknown", target=target, path=str(path),
                        tolerance=FLOAT32_TOLERANCE[device.kind], device="-", reference_device=device.label, cases=(),
                        error=reason)
