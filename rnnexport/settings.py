"""Settings given on the command line over those of a config file.

Each value follows one rule: given on the command line, it wins; else the config file's (a
model's own entry over the file's top level); else the default. `Given` holds what the command
line gave, None (or empty) where it gave nothing, so that the config file applies there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport.config import Config, ModelEntry
from rnnexport.options import SourceOptions, SweepOptions, ValidateOptions
from rnnexport.thresholds import ThresholdOverrides
from rnnexport.tolerance import ToleranceOverrides


@dataclass(frozen=True)
class Given:
    """What the command line gave; None or empty: not given."""

    targets: tuple[str, ...] | None = None
    out: Path | None = None
    device: str | None = None
    lengths: tuple[int, ...] | None = None
    batches: tuple[int, ...] | None = None
    seed: int | None = None
    chunks: tuple[int, ...] | None = None
    data: Path | None = None
    atol: Mapping[str, float] = field(default_factory=dict)
    rtol: Mapping[str, float] = field(default_factory=dict)
    source: SourceOptions = field(default_factory=SourceOptions)
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    task: str | None = None
    fail_fast: bool = False
    latency_repeats: int | None = None
    max_latency_ms: Mapping[str, float] = field(default_factory=dict)
    min_speedup: Mapping[str, float] = field(default_factory=dict)
    save_golden: Path | None = None
    force_golden: bool = False


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _gates(given: Mapping[str, float], model: tuple[tuple[str, float], ...]) -> dict[str, float]:
    """A latency gate by target: the command line's over the model's, all of them where it gives `*`."""
    return dict(given) if "*" in given else {**dict(model), **given}


def validate_options(given: Given, config: Config, model: ModelEntry | None = None) -> ValidateOptions:
    """The sweep, device, tolerances and latency gates of one model: command line, then the
    model's entry (its `data`, its own values per target or output), then the config file, then
    the defaults."""
    model = model or ModelEntry(source=config.path)
    defaults = SweepOptions()
    sweep = SweepOptions(
        lengths=_first(given.lengths, config.lengths),
        batches=_first(given.batches, config.batches, defaults.batches),
        seed=_first(given.seed, config.seed, defaults.seed),
        data=_first(given.data, model.data, config.data),
        chunks=_first(given.chunks, config.chunks, defaults.chunks),
        data_batch=config.data_batch,
        features=config.features,
    )
    own = config.tolerance
    if model.atol or model.rtol:
        own = ToleranceOverrides(atol=dict(model.atol), rtol=dict(model.rtol), under=config.tolerance,
                                 origin=model.origin)
    tolerance = ToleranceOverrides(atol=dict(given.atol), rtol=dict(given.rtol), under=own)
    defaults_of = ValidateOptions()
    return ValidateOptions(device=_first(given.device, config.device, defaults_of.device), sweep=sweep,
                           tolerance=tolerance, fail_fast=given.fail_fast,
                           latency_repeats=_first(given.latency_repeats, defaults_of.latency_repeats),
                           max_latency_ms=_gates(given.max_latency_ms, model.max_latency_ms),
                           min_speedup=_gates(given.min_speedup, model.min_speedup),
                           save_golden=given.save_golden, force_golden=given.force_golden,
                           thresholds=given.thresholds, task=given.task)


def source_options(given: Given, model: ModelEntry) -> SourceOptions:
    """How one model's source is read: the command line's options over the model's entry."""
    cli = given.source
    return SourceOptions(unsafe=cli.unsafe or model.unsafe, inputs=cli.inputs or model.inputs,
                         outputs=cli.outputs or model.outputs, step=_first(cli.step, model.step),
                         custom_objects=cli.custom_objects or model.custom_objects, cells=cli.cells or model.cells,
                         architecture=_first(cli.architecture, model.architecture))


def targets(given: Given, config: Config) -> tuple[str, ...]:
    """The targets to convert to; an empty list in the config file means the default too."""
    return given.targets or config.targets or ("savedmodel",)


def report_paths(given: Mapping[str, Path | None], config: Config) -> dict[str, Path]:
    """Where each report format is written: the command line's path, else the config file's."""
    paths = {kind: path or config.reports.get(kind) for kind, path in given.items()}
    return {kind: path for kind, path in paths.items() if path is not None}
