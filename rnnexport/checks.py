"""Checks without a source: exports against a golden file (`rnnexport check`), and one export
against another (`rnnexport compare`). Neither imports TensorFlow unless an export needs it to
run (a SavedModel) or the GPU is asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from rnnexport import plugins
from rnnexport.console import native_logs_off, native_stderr_silenced
from rnnexport.device import Device, resolve_device
from rnnexport.errors import UserError, one_line
from rnnexport.exported import Interface
from rnnexport.options import ValidateOptions
from rnnexport.parity import ExportResult, check, closers
from rnnexport.reports import ParityReport
from rnnexport.runner import ExportReference
from rnnexport.sweep import build_cases, build_stream_cases
from rnnexport.under_test import Side, check_names, check_options, exports_under_test

# progress(message, done, total), as the API's.
Progress = Callable[[str, int, int], None]


def _runtime_device(request: str) -> Device:
    """The device of a check without a source: the CPU unless asked for the GPU (which
    TensorFlow finds), so that checking an ONNX or TFLite file imports no TensorFlow."""
    if request == "cpu":
        return Device("cpu", "/CPU:0", "CPU")
    return resolve_device(request)


def _runtime_report(device: Device, seed: int, exports: list[ExportResult]) -> ParityReport:
    import sys

    from rnnexport.tf import environment, versions

    return ParityReport(exports=exports, device=device.label, seed=seed, versions=versions(),
                        environment=environment(with_tensorflow="tensorflow" in sys.modules))


def check_golden(exports: Sequence[str | Path], golden: str | Path, options: ValidateOptions = ValidateOptions(),
                 progress: Progress | None = None) -> ParityReport:
    """Check exports against a golden file written by `--save-golden` (`save_golden`), with only
    each export's runtime: no source, and no TensorFlow for ONNX and TFLite files. The golden
    file's sweep and tolerances apply; `options.tolerance` is laid over its tolerances.

    >>> rnnexport.check_golden(["exports/model.onnx"], "golden.npz").passed
    True
    """
    from rnnexport import golden as goldens

    with native_stderr_silenced(native_logs_off()):
        saved = goldens.load(Path(golden))
        check_names(options, list(saved.time_axes))
        if options.min_speedup:
            raise UserError(f"--min-speedup: {saved.path} holds the source's outputs, not its speed; "
                            "gate the latency with --max-latency-ms")
        device = _runtime_device(options.device)
        side = Side(saved.meta["source"], saved.meta["source_kind"], saved.time_axes, saved.floor,
                     saved.meta["min_length"])
        under_test = exports_under_test(side, [(None, Path(p)) for p in exports], device,
                                         saved.overrides(options.tolerance), options.thresholds)
        if progress:
            progress(f"checking against {saved.describe()}", 0, 0)
        results = check(saved.reference, under_test, [], progress, (), saved.inputs, task=options.task,
                        options=check_options(options))
        return _runtime_report(device, saved.meta["sweep"]["seed"], results)


# What `compare` says of an interface no export stored, read from the runtimes instead.
GUESSED = ("read from the runtime signatures: neither export carries rnnexport's interface metadata, so integer "
           "inputs are sampled as 0 or 1, and no vocabulary, masking or lengths input is known")


def _interface(target: Any, path: Path, device: Device) -> tuple[tuple[list[Any], list[Any]], Interface | None]:
    """The export's inputs and outputs as rnnexport stored them (else as its runtime declares them),
    and the stored interface (None: a foreign file)."""
    try:
        stored = target.stored_interface(path)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: the interface rnnexport stored in it cannot be read ({one_line(exc)}); "
                        "export it again") from None
    if stored is not None:
        return (list(stored.inputs), list(stored.outputs)), stored
    return target.interface(path, device), None


def _interface_problem(first: Path, second: Path, a: tuple[list[Any], list[Any]], b: tuple[list[Any], list[Any]]
                       ) -> str:
    """How the interfaces of two exports differ, in one line (empty: they match)."""
    for kind, left, right in (("inputs", a[0], b[0]), ("outputs", a[1], b[1])):
        names_a, names_b = sorted(t.name for t in left), sorted(t.name for t in right)
        if names_a != names_b:
            return f"{kind} {', '.join(names_a)} != {', '.join(names_b)}"
    for spec in a[0]:
        other = next(t for t in b[0] if t.name == spec.name)
        if (spec.dtype, len(spec.shape)) != (other.dtype, len(other.shape)) or any(
                x is not None and y is not None and x != y for x, y in zip(spec.shape[1:], other.shape[1:])):
            return f"input {spec.describe()} != {other.describe()}"
    return ""


def compare(first: str | Path, second: str | Path, options: ValidateOptions = ValidateOptions(),
            progress: Progress | None = None) -> ParityReport:
    """Check `second` against `first`, two exports of the same interface in any formats, over
    the sweep (streaming cases too where both stream): no source needed. Latency ratios are
    against `first`; the tolerance is `second`'s default plus `first`'s. The sweep's inputs
    follow the interface rnnexport stored in the exports (token ids within the vocabulary,
    masked tails, lengths inputs); for files another tool wrote, their runtime signatures.

    >>> rnnexport.compare("exports/model.onnx", "exports/model.tflite").passed
    True
    """
    with native_stderr_silenced(native_logs_off()):
        return _compare(Path(first), Path(second), options, progress)


def _compare(first: Path, second: Path, options: ValidateOptions, progress: Progress | None) -> ParityReport:
    device = _runtime_device(options.device)
    target = plugins.find_target_for(first)
    interface, stored = _interface(target, first, device)
    other, stored_other = _interface(plugins.find_target_for(second), second, device)
    problem = _interface_problem(first, second, interface, other)
    if problem:
        raise UserError(f"{first} and {second} do not take and give the same tensors: {problem}")
    known = stored or stored_other
    if known is not None:
        inputs, outputs = list(known.inputs), list(known.outputs)
        fixed_length, min_length = known.fixed_length, known.min_length
        told = f"as rnnexport stored it in {first if stored else second}"
    else:
        inputs, outputs = interface
        fixed = {d for spec in inputs if spec.time_axis is not None for d in [spec.shape[spec.time_axis]] if d}
        fixed_length, min_length = (fixed.pop() if len(fixed) == 1 else None), 1
        told = GUESSED
    check_names(options, [o.name for o in outputs])
    side = Side(str(first), f"{target.name} export", {o.name: o.time_axis for o in outputs}, min_length=min_length,
                 added=target.default_tolerance(device, first))
    under_test = [replace(e, details={**e.details, "interface": told})
                  for e in exports_under_test(side, [(None, second)], device, options.tolerance, options.thresholds)]
    with ExitStack() as opening:
        for close in closers(*(part for e in under_test for part in e.opened)):
            opening.callback(close)
        cases = build_cases(inputs, fixed_length, options.sweep, min_length)
        stream_cases = []
        if under_test[0].stream_runner is not None:
            stream_cases = build_stream_cases(inputs, fixed_length, options.sweep)
        reference = ExportReference(target.runner(first, device), target.stream_runner(first, device), str(first))
        opening.pop_all()
    if progress:
        progress(f"comparing {second} with {first}", 0, 0)
    results = check(reference, under_test, cases, progress, stream_cases, inputs, task=options.task,
                    options=check_options(options, against=f"{target.name} export"))
    return _runtime_report(device, options.sweep.seed, results)
