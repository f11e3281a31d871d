"""Options travel as frozen dataclasses, shared by the command line and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rnnexport.tolerance import ToleranceOverrides


@dataclass(frozen=True)
class SweepOptions:
    """Which cases the parity engine runs.

    `lengths=None` picks 1, 2, a short length, the source's own length and 4x beyond it.
    `data` replaces the random inputs with the arrays of an `.npz` file keyed by input name.
    `chunks`: the chunk sizes the streaming check feeds a streaming export.
    """

    lengths: tuple[int, ...] | None = None
    batches: tuple[int, ...] = (1, 3)
    seed: int = 0
    data: Path | None = None
    chunks: tuple[int, ...] = (1, 5, 17)


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read. `unsafe` lets Keras deserialise arbitrary code (Lambda layers).

    For graphs (TF1 checkpoints), `inputs` and `outputs` name the tensors to export where the
    graph holds more than one candidate, and `step` picks a checkpoint other than the newest."""

    unsafe: bool = False
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    step: int | None = None


DEFAULT_OPSET = 17


QUANTIZATIONS = ("float16", "dynamic-range")


@dataclass(frozen=True)
class ExportOptions:
    """How targets write their files.

    `opset`: ONNX opset version. `batch`: the fixed batch of TFLite exports (their converter
    needs one; time stays dynamic). `quantize`: TFLite weight quantization, one of
    QUANTIZATIONS. `select_ops`: let TFLite fall back to TensorFlow (Flex) ops. `streaming`: also
    write the `initial_state` and `step` entry points of a causal model.
    """

    opset: int = DEFAULT_OPSET
    batch: int = 1
    quantize: str | None = None
    select_ops: bool = False
    streaming: bool = False


@dataclass(frozen=True)
class ValidateOptions:
    device: str = "auto"
    sweep: SweepOptions = field(default_factory=SweepOptions)
    tolerance: ToleranceOverrides = field(default_factory=ToleranceOverrides)


@dataclass(frozen=True)
class ConvertOptions:
    targets: tuple[str, ...] = ("savedmodel",)
    force: bool = False
    validate: bool = True
    source: SourceOptions = field(default_factory=SourceOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    validation: ValidateOptions = field(default_factory=ValidateOptions)
