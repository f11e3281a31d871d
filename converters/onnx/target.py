"""Target plugin for ONNX files with named dynamic batch and time, run on onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnexport.device import Device
from rnnexport.errors import ExportError, UserError
from rnnexport.model import RecurrentModel
from rnnexport.target_options import option
from rnnexport.plugins import ExportDetails, Target
from rnnexport_converters.onnx import files as onnx_files
from rnnexport_converters.onnx.files import META, recurrent_ops, set_metadata, streaming_files

if TYPE_CHECKING:
    from rnnexport.exported import ExportContents
    from rnnexport_converters.onnx.runtime import OnnxProbe, OnnxRunner, OnnxStreamRunner


@dataclass(frozen=True)
class OnnxOptions:
    """How an ONNX file is written."""

    opset: int = option(17, "ONNX opset version.", minimum=13, maximum=18)
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

    def describe(self, path: Path) -> ExportDetails:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        return {
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
