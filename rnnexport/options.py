"""Options travel as frozen dataclasses, shared by the command line and the Python API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnexport.thresholds import ThresholdOverrides
from rnnexport.tolerance import ToleranceOverrides


@dataclass(frozen=True)
class SweepOptions:
    """Which cases the parity engine runs.

    `lengths=None` picks 1, 2, a short length, the source's own length and 4x beyond it.
    `data` replaces the random inputs with the arrays of an `.npz` file keyed by input name.
    `chunks`: the chunk sizes the streaming check feeds a streaming export.
    `data` naming a directory of `.npz` shards or TFRecord files streams them through in batches
    of `data_batch` rows (None: as many as hold about 4M input values, from 16 to 4096; see
    `rnnexport.data`); `features` is the spec of the TFRecord examples:
    (name, dtype, shape with -1 for the time axis) per input.
    """

    lengths: tuple[int, ...] | None = None
    batches: tuple[int, ...] = (1, 3)
    seed: int = 0
    data: Path | None = None
    chunks: tuple[int, ...] = (1, 5, 17)
    data_batch: int | None = None
    features: tuple[tuple[str, str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read. `unsafe` lets Keras deserialise arbitrary code (Lambda layers).

    For graphs (TF1 checkpoints), `inputs` and `outputs` name the tensors to export where the
    graph holds more than one candidate, and `step` picks a checkpoint other than the newest.

    `custom_objects`: `module:Name` references to the custom layer classes a Keras file uses.
    `cells`: the architecture of a checkpoint saved without a graph, one recurrent layer per
    entry (`lstm:64`, `gru:128`, TF1 cell class names accepted); `architecture`: a Keras model
    file or JSON config to fill from such a checkpoint instead."""

    unsafe: bool = False
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    step: int | None = None
    custom_objects: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()
    architecture: Path | None = None


@dataclass(frozen=True)
class ExportOptions:
    """How targets write their files.

    `target_options` holds, per target name, the values of options that target declares (see
    `rnnexport plugins` and each target's `Options`), e.g. `{"tflite": {"batch": 2}}`; they are
    checked against the declaration before anything is written. `streaming`: also write the
    `initial_state` and `step` entry points of a causal model.
    """

    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    streaming: bool = False


@dataclass(frozen=True)
class ValidateOptions:
    """`thresholds` override the quantization mode's defaults for exports judged by decisions
    (int8, int16x8, ONNX dynamic int8); `task="classify"` declares every output class scores.

    `fail_fast` ends the sweep at the first case an export fails. `latency_repeats`: timed calls
    per shape of the sweep after its own call (0: no latency). `max_latency_ms` and
    `min_speedup` (by target name or `*`) fail an export slower than declared at some shape.
    `save_golden`: write the sweep's inputs and the source's outputs there (an existing file
    only with `force_golden`)."""

    device: str = "auto"
    sweep: SweepOptions = field(default_factory=SweepOptions)
    tolerance: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    task: str | None = None
    fail_fast: bool = False
    latency_repeats: int = 3
    max_latency_ms: Mapping[str, float] = field(default_factory=dict)
    min_speedup: Mapping[str, float] = field(default_factory=dict)
    save_golden: Path | None = None
    force_golden: bool = False


@dataclass(frozen=True)
class ConvertOptions:
    targets: tuple[str, ...] = ("savedmodel",)
    force: bool = False
    validate: bool = True
    source: SourceOptions = field(default_factory=SourceOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    validation: ValidateOptions = field(default_factory=ValidateOptions)
