"""Target plugin for ONNX files with named dynamic batch and time, run on onnxruntime."""

from __future__ import annotations

import json
from contextlib import closing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.device import Device
from rnnexport.exported import Interface
from rnnexport.errors import ExportError, UserError
from rnnexport.model import RecurrentModel, TensorInfo
from rnnexport.runner import seen_tensor
from rnnexport.target_options import option
from rnnexport.plugins import ExportDetails, Target
from rnnexport_converters.onnx import files as onnx_files
from rnnexport.tolerance import Tolerance
from rnnexport_converters.onnx.files import META, recurrent_ops, set_metadata, streaming_files

if TYPE_CHECKING:
    from rnnexport.exported import ExportContents
    from rnnexport_converters.onnx.runtime import OnnxProbe, OnnxRunner, OnnxStreamRunner

# onnxruntime's quantizations (see `quantize`), named as the TFLite target names its own.
QUANTIZATIONS = ("float16", "dynamic-range", "int8")


@dataclass(frozen=True)
class OnnxOptions:
    """How an ONNX file is written."""

    opset: int = option(17, "ONNX opset version.", minimum=13, maximum=18)
    quantize: str | None = option(None, "Quantize ONNX exports with onnxruntime's tools: float16 (float32 inputs and "
                                  "outputs kept), dynamic-range (int8 weights), or int8 (static QDQ, calibrated on "
                                  "--calibration); judged by SNR and top-1 agreement except float16.", kind=str,
                                  choices=QUANTIZATIONS)
    calibration: str | None = option(None, "The .npz (keyed by input name, as --data) that int8 and int16x8 exports are "
                                     "calibrated on [default: random inputs drawn as the sweep draws them, with a "
                                     "warning].", kind=str)
    optimize_for: str = option("batch=1", "The shape the file should run fastest at, as batch=N: each recurrent "
                               "layer is written in the form (fused op or Loop of MatMuls) measured fastest there.")

    @property
    def batch(self) -> int:
        """The batch of `optimize_for`."""
        key, _, value = self.optimize_for.partition("=")
        if key.strip() != "batch" or not value.strip().isdigit() or int(value) < 1:
            raise UserError(f"target 'onnx' option 'optimize_for': expected batch=N with N >= 1, "
                            f"got {self.optimize_for!r}")
        return int(value)


# TFLite's float16 tolerance: ONNX float16 files (every tensor float16, float32 I/O) met it on the
# tests' model of every layer kind and on the ML-KWS models (SNR 59-64 dB, benchmarks/quantized.py).
FLOAT16_TOLERANCE = Tolerance(atol=5e-3, rtol=5e-3)


class OnnxTarget(Target):
    name = "onnx"
    description = "ONNX file via tf2onnx, fused LSTM/GRU/RNN ops, dynamic batch and time, onnxruntime"
    suffix = ".onnx"
    streams = True
    Options = OnnxOptions

    def export(self, model: RecurrentModel, path: Path, options: OnnxOptions, streaming: bool) -> None:
        from rnnexport_converters.onnx.writer import write

        write(model, path, options, streaming)

    def files(self, path: Path, streaming: bool) -> list[Path]:
        return [path, *streaming_files(path)] if streaming else [path]

    def stream_runner(self, path: Path, device: Device) -> OnnxStreamRunner | None:
        from rnnexport_converters.onnx.runtime import OnnxRunner, OnnxStreamRunner

        step, initial = streaming_files(path)
        if not step.is_file():
            return None
        if not initial.is_file():
            raise ExportError(f"{initial}: missing; the streaming export {step} needs it")
        return OnnxStreamRunner(OnnxRunner(step, device), OnnxRunner(initial, device))

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".onnx"

    def probe(self, path: Path, device: Device) -> OnnxProbe:
        from rnnexport_converters.onnx.runtime import OnnxProbe

        return OnnxProbe(path, device)

    def runner(self, path: Path, device: Device) -> OnnxRunner:
        from rnnexport_converters.onnx.runtime import OnnxRunner

        return OnnxRunner(path, device)

    def _meta(self, path: Path) -> dict[str, str]:
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}

    def judged_by(self, path: Path) -> str | None:
        quantize = self._meta(path).get(META + "quantize")
        return quantize if quantize in ("int8", "dynamic-range") else None

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        if self._meta(path).get(META + "quantize") == "float16":
            return FLOAT16_TOLERANCE
        return self.tolerances[device.kind]

    def interface(self, path: Path, device: Device) -> tuple[list[TensorInfo], list[TensorInfo]]:
        from rnnexport_converters.onnx.runtime import ORT_TYPES, OnnxRunner

        session = OnnxRunner(path, device).session
        return ([seen_tensor(i.name, ORT_TYPES.get(i.type, "float32"), i.shape) for i in session.get_inputs()],
                [seen_tensor(o.name, ORT_TYPES.get(o.type, "float32"), o.shape, output=True)
                 for o in session.get_outputs()])

    def stored_interface(self, path: Path) -> Interface | None:
        from rnnexport_converters.onnx.runtime import OnnxRunner

        # onnxruntime reads the metadata, so that a machine with only the runtime can: no onnx.
        with closing(OnnxRunner(path, Device("cpu", "/CPU:0", "CPU"))) as runner:
            stored = runner.session.get_modelmeta().custom_metadata_map
        return Interface.from_dict(json.loads(stored[META + "interface"])) if META + "interface" in stored else None

    def describe(self, path: Path) -> ExportDetails:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        quantize = meta.get(META + "quantize")
        from rnnexport_converters.onnx.quantize import quantized_ops

        return {
            **({"quantize": quantize, "quantized_ops": quantized_ops(proto)} if quantize else {}),
            **({"calibration": meta[META + "calibration"]} if META + "calibration" in meta else {}),
            "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            "recurrent_ops": recurrent_ops(proto),
            "fused": json.loads(meta.get(META + "fused", "{}")),
            "not_fused": json.loads(meta.get(META + "not_fused", "{}")),
        }

    def contents(self, path: Path) -> ExportContents:
        return onnx_files.contents(path)

    def record_parity(self, path: Path, summary: Mapping[str, Any]) -> None:
        import onnx

        proto = onnx.load(str(path))
        set_metadata(proto, {META + "parity": json.dumps(summary, sort_keys=True)})
        tmp = path.with_name(f".{path.name}.tmp")
        onnx.save(proto, str(tmp))
        tmp.replace(path)
