"""Options travel as frozen dataclasses, shared by the command line and the Python API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Tolerance:
    """An output passes where every element satisfies |export - reference| <= atol + rtol * |reference|."""

    atol: float
    rtol: float

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}

    def __str__(self) -> str:
        return f"atol {self.atol:g} rtol {self.rtol:g}"


# What float32 exports meet against the reference, per device kind. Measured on CPU: SavedModel
# matches exactly, fused ONNX and TFLite kernels within 4e-7 over 1024 steps of a 256-unit LSTM.
# GPU references differ more: cuDNN kernels and TF32-free matmuls take other paths.
FLOAT32_TOLERANCE = {"cpu": Tolerance(atol=1e-5, rtol=1e-5), "gpu": Tolerance(atol=1e-4, rtol=1e-4)}


@dataclass(frozen=True)
class ToleranceOverrides:
    """User overrides keyed by target name; the key `*` applies to every target.

    `device` limits them to one device kind (`cpu` or `gpu`). `under` holds the overrides these
    ones take precedence over: the command line sits over the config file's device table, which
    sits over its table for every device.

    >>> ToleranceOverrides(atol={"*": 1e-4, "tflite": 1e-3}).apply("tflite", Tolerance(1e-5, 1e-5))
    Tolerance(atol=0.001, rtol=1e-05)
    """

    atol: Mapping[str, float] = field(default_factory=dict)
    rtol: Mapping[str, float] = field(default_factory=dict)
    device: str | None = None
    under: ToleranceOverrides | None = None

    def apply(self, target: str, default: Tolerance, device: str = "cpu") -> Tolerance:
        if self.under is not None:
            default = self.under.apply(target, default, device)
        if self.device is not None and self.device != device:
            return default
        return Tolerance(
            atol=self.atol.get(target, self.atol.get("*", default.atol)),
            rtol=self.rtol.get(target, self.rtol.get("*", default.rtol)),
        )


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
