"""The exports of one check as the parity engine takes them: each set up with its runners, its
tolerance and its facts, whatever it is checked against (a source, a golden file, another
export); and the options of the check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport import plugins, tolerance
from rnnexport.device import Device
from rnnexport.errors import NotRunnableError, UserError, one_line
from rnnexport.options import ValidateOptions
from rnnexport.parity import CheckOptions, ExportUnderTest, LatencyGate, closers
from rnnexport.plugins import ExportDetails, OpenedSource, Target
from rnnexport.thresholds import DEFAULT_THRESHOLDS, ThresholdOverrides
from rnnexport.tolerance import FLOAT32_TOLERANCE, Tolerance


def _broken(exc: Exception) -> str:
    """Why an export could not be set up, in one line: the gate reports it and goes on."""
    if isinstance(exc, UserError):
        return str(exc)
    return f"cannot read the export: {one_line(exc)}"


@dataclass(frozen=True)
class Side:
    """What the exports are checked against, as far as setting them up needs it: a source, a
    golden file or another export."""

    label: str
    kind: str
    time_axes: dict[str, int | None]
    floor: Any = None
    min_length: int = 1
    # The reference's own error against the source (another export), added to each export's
    # default: two exports within tolerance of their source may differ by both tolerances.
    added: Any = None


def details_of(target: Target, path: Path) -> ExportDetails:
    """What the target says about the file; facts for the report, so a runtime-only machine
    without the library that reads them (onnx beside onnxruntime) goes without."""
    try:
        return ExportDetails(**target.describe(path))
    except ImportError:
        return ExportDetails()


def source_side(opened: OpenedSource, label: str, device: Device) -> Side:
    return Side(label, opened.info.kind, {o.name: o.time_axis for o in opened.info.outputs},
                 opened.tolerance_floor(device), opened.info.min_length)


def exports_under_test(side: Side, exports: Sequence[tuple[Target | None, Path]], device: Device,
                        overrides: tolerance.ToleranceOverrides,
                        thresholds: ThresholdOverrides = ThresholdOverrides()) -> list[ExportUnderTest]:
    """Set up every export; one that cannot be read or loaded becomes a failing entry with the reason."""
    under_test = []
    for target, path in exports:
        runner, stream_runner, probe, not_runnable, broken = None, None, None, "", ""
        default, details, judged = FLOAT32_TOLERANCE[device.kind], ExportDetails(), None
        try:
            if target is None:
                target = plugins.find_target_for(path)
            runner = target.runner(path, device)
            stream_runner = target.stream_runner(path, device)
            probe = target.probe(path, device)
            default = target.default_tolerance(device, path)
            if side.added is not None:
                default = Tolerance(default.atol + side.added.atol, default.rtol + side.added.rtol)
            details = details_of(target, path)
            mode = target.judged_by(path)
            judged = thresholds.apply(DEFAULT_THRESHOLDS[mode]) if mode else None
            if stream_runner:
                details["streaming_states"] = stream_runner.states
            if side.min_length > 1:
                details["shortest_length"] = side.min_length
        except NotRunnableError as exc:
            not_runnable = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken export fails its own check, never the whole run
            broken = _broken(exc)
            for close in closers(runner, stream_runner):
                close()
            runner = stream_runner = None
        name = target.name if target is not None else "unknown"
        under_test.append(ExportUnderTest(
            source=side.label,
            source_kind=side.kind,
            target=name,
            path=str(path),
            runner=runner,
            tolerance=tolerance.resolve(name, default, side.floor, overrides, device.kind, side.time_axes),
            time_axes=side.time_axes,
            details=details,
            not_runnable=not_runnable,
            stream_runner=stream_runner,
            broken=broken,
            probe=probe,
            thresholds=judged,
        ))
    return under_test


def check_options(options: ValidateOptions, against: str = "source", keep_stream_cases: bool = False
                   ) -> CheckOptions:
    names = {*options.max_latency_ms, *options.min_speedup}
    gates = {name: LatencyGate(options.max_latency_ms.get(name, options.max_latency_ms.get("*")),
                               options.min_speedup.get(name, options.min_speedup.get("*"))) for name in names}
    return CheckOptions(fail_fast=options.fail_fast, latency_repeats=options.latency_repeats, gates=gates,
                        latency_against=against, keep_stream_cases=keep_stream_cases)


def check_names(options: ValidateOptions, outputs: Sequence[str] | None = None) -> None:
    """Refuse a per-target or per-output value for a name that is neither: the latency gates'
    names at once, the tolerances' once the `outputs` are known."""
    targets = [t.name for t in plugins.targets()]
    for where, given in (("--max-latency-ms", options.max_latency_ms), ("--min-speedup", options.min_speedup)):
        tolerance.unknown_name(given, targets, where)
    if outputs is not None:
        tolerance.check_targets(options.tolerance, targets, outputs)
