"""Target plugin for TFLite flatbuffers: builtin ops, any batch and length, no state between calls, LiteRT runner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.device import Device
from rnnexport.exported import Interface
from rnnexport.model import RecurrentModel, TensorInfo
from rnnexport.runner import seen_tensor
from rnnexport.target_options import option
from rnnexport.tolerance import Tolerance
from rnnexport.plugins import ExportDetails, Target
from rnnexport_converters.tflite import files as tflite_files
from rnnexport_converters.tflite.files import RECURRENT_OPS, read_file, step_file

if TYPE_CHECKING:
    from rnnexport.exported import ExportContents
    from rnnexport_converters.tflite.runtime import TfliteProbe, TfliteRunner, TfliteStreamRunner

QUANTIZATIONS = ("float16", "dynamic-range", "int8", "int16x8")
FORMS = ("fused", "loop")


@dataclass(frozen=True)
class TfliteOptions:
    """How a TFLite file is written: any batch and any length unless a batch is fixed."""

    batch: int | None = option(None, "Fix the batch of TFLite exports (default: any batch); a file with a fixed "
                               "batch runs larger batches in chunks.", kind=int, minimum=1)
    quantize: str | None = option(None, "Quantize TFLite exports: float16 or dynamic-range weights (validated with "
                                  "that quantization's own tolerance), or int8 / int16x8 activations with int8 weights, "
                                  "calibrated on --calibration (judged by SNR and top-1 agreement).",
                                  kind=str, choices=QUANTIZATIONS)
    calibration: str | None = option(None, "The .npz (keyed by input name, as --data) that int8 and int16x8 exports are "
                                     "calibrated on [default: random inputs drawn as the sweep draws them, with a "
                                     "warning].", kind=str)
    integer_io: bool = option(False, "int8 and int16x8 TFLite exports take and return integers (their scales are in "
                              "the file and the report) instead of float32.")
    select_ops: bool = option(False, "Allow TensorFlow (Flex) ops in TFLite exports; needs a runtime with the Flex "
                              "delegate.", flag="--tflite-select-ops")
    form: str = option("fused", "Recurrent layers of TFLite exports: LiteRT's fused kernels wherever one computes the "
                       "layer (what mobile delegates accelerate), or builtin loops everywhere (faster on x86 CPUs, "
                       "see benchmarks/latency.py).", choices=FORMS, flag="--tflite-form")


# Quantized weights trade accuracy; measured worst on the layer-kind fixtures and the real-world
# models: float16 1.2e-3, dynamic-range 4.1e-3.
QUANTIZED_TOLERANCE = {
    "float16": Tolerance(atol=5e-3, rtol=5e-3),
    "dynamic-range": Tolerance(atol=2e-2, rtol=2e-2),
}


class TfliteTarget(Target):
    name = "tflite"
    description = "TFLite flatbuffer, builtin ops, stateless fused kernels and loops, any batch and length, LiteRT"
    suffix = ".tflite"
    streams = True
    Options = TfliteOptions

    def export(self, model: RecurrentModel, path: Path, options: TfliteOptions, streaming: bool) -> None:
        from rnnexport_converters.tflite.writer import write

        write(model, path, options, streaming)

    def files(self, path: Path, streaming: bool) -> list[Path]:
        return [path, step_file(path)] if streaming else [path]

    def stream_runner(self, path: Path, device: Device) -> TfliteStreamRunner | None:
        from rnnexport_converters.tflite.runtime import TfliteStreamRunner

        step = step_file(path)
        return TfliteStreamRunner(step) if step.is_file() else None

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            return f.read(8)[4:8] == b"TFL3"

    def probe(self, path: Path, device: Device) -> TfliteProbe:
        from rnnexport_converters.tflite.runtime import TfliteProbe

        return TfliteProbe(path)

    def runner(self, path: Path, device: Device) -> TfliteRunner:
        from rnnexport_converters.tflite.runtime import TfliteRunner

        return TfliteRunner(path)

    def judged_by(self, path: Path) -> str | None:
        quantize = read_file(path)[0].get("quantize")
        return quantize if quantize in ("int8", "int16x8") else None

    def interface(self, path: Path, device: Device) -> tuple[list[TensorInfo], list[TensorInfo]]:
        from rnnexport_converters.tflite.runtime import TfliteRunner

        signature = TfliteRunner(path).interpreter.get_signature_runner()
        return ([seen_tensor(name, d["dtype"], d["shape_signature"]) for name, d in signature.get_input_details().items()],
                [seen_tensor(name, d["dtype"], d["shape_signature"], output=True)
                 for name, d in signature.get_output_details().items()])

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        meta, _ = read_file(path)
        return QUANTIZED_TOLERANCE.get(meta.get("quantize"), self.tolerances[device.kind])

    def stored_interface(self, path: Path) -> Interface | None:
        meta, _ = read_file(path)
        return Interface.from_dict(meta["interface"]) if "interface" in meta else None

    def describe(self, path: Path) -> ExportDetails:
        meta, ops = read_file(path)
        return {
            "batch": meta.get("batch"),
            "quantize": meta.get("quantize"),
            **({"calibration": meta["calibration"], "io": meta["io"]} if "calibration" in meta else {}),
            "ops": ops,
            "recurrent_ops": {op: n for op, n in ops.items() if op in RECURRENT_OPS},
            "stateless": meta.get("stateless", False),
            "forms": meta.get("forms", {}),
            "fused": meta.get("fused", {}),
            "not_fused": meta.get("not_fused", {}),
            **({"batch_fixed_because": meta["batch_fixed_because"]} if meta.get("batch_fixed_because") else {}),
        }

    def contents(self, path: Path) -> ExportContents:
        return tflite_files.contents(path)

    def record_parity(self, path: Path, summary: Mapping[str, Any]) -> None:
        tflite_files.record_parity(path, summary)
