"""Target plugin for ONNX files with named dynamic batch and time, run on onnxruntime."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport import __version__
from rnnexport.device import Device
from rnnexport.errors import ExportError
from rnnexport.model import RecurrentModel
from rnnexport.options import FLOAT32_TOLERANCE, ExportOptions, Tolerance
from rnnexport.plugins import Target
from rnnexport.runner import Arrays
from rnnexport.tf import tensorflow

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")
META = "rnnexport."
ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
             "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _declare_io_shapes(proto: Any, model: RecurrentModel) -> None:
    """Graph inputs and outputs take the RecurrentModel's shapes, with `batch` and `time` named
    (tf2onnx leaves `unk__N`, or no shape where a fused op feeds an output directly)."""
    specs = {t.name: t for t in (*model.info.inputs, *model.info.outputs)}
    for value in (*proto.graph.input, *proto.graph.output):
        spec = specs.get(value.name)
        if spec is None:
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for axis, size in enumerate(spec.shape):
            dim = shape.dim.add()
            if size is not None:
                dim.dim_value = size
            else:
                dim.dim_param = "batch" if axis == 0 else "time" if axis == spec.time_axis else f"{value.name}_{axis}"


def _set_metadata(proto: Any, values: Mapping[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def recurrent_ops(proto: Any) -> dict[str, int]:
    """Recurrent op types in the main graph (a loop that was not fused shows up as Loop)."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in RECURRENT_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class OnnxTarget(Target):
    name = "onnx"
    description = "ONNX file via tf2onnx, fused LSTM/GRU/RNN ops, dynamic batch and time, onnxruntime"
    suffix = ".onnx"

    def export(self, model: RecurrentModel, path: Path, options: ExportOptions) -> None:
        import onnx
        import tf2onnx

        from converters.onnx_fusion import FusedOps

        import os

        tensorflow()
        # tf2onnx logs every op it cannot map before failing; the one-line error below says it all.
        quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0"
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL if quiet else logging.INFO)
        fusion = FusedOps()
        function, not_fused = model.sequence, {}
        if model.trace_with is not None:
            function, not_fused = model.trace_with(fusion.stub, None)
        for recurrence in model.recurrences:
            if recurrence.name not in fusion.fused and recurrence.name not in not_fused:
                not_fused[recurrence.name] = recurrence.unfusable or "not replaced while tracing"
        try:
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=list(function.input_signature), opset=options.opset,
                custom_op_handlers=fusion.handlers(),
            )
        except Exception as exc:  # noqa: BLE001 - tf2onnx raises anything; the user needs one line
            raise ExportError(f"tf2onnx cannot convert this model: {str(exc).splitlines()[0]}") from None
        _declare_io_shapes(proto, model)
        _set_metadata(proto, {
            META + "version": __version__,
            META + "source": model.info.path,
            META + "source_kind": model.info.kind,
            META + "fused": json.dumps(fusion.fused),
            META + "not_fused": json.dumps(not_fused),
        })
        proto.producer_name = "rnnexport"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".onnx"

    def runner(self, path: Path, device: Device) -> OnnxRunner:
        return OnnxRunner(path, device)

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        return FLOAT32_TOLERANCE[device.kind]

    def describe(self, path: Path) -> dict[str, Any]:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        return {
            "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            "recurrent_ops": recurrent_ops(proto),
            "fused": json.loads(meta.get(META + "fused", "{}")),
            "not_fused": json.loads(meta.get(META + "not_fused", "{}")),
        }

    def record_parity(self, path: Path, summary: Mapping[str, Any]) -> None:
        import onnx

        proto = onnx.load(str(path))
        _set_metadata(proto, {META + "parity": json.dumps(summary, sort_keys=True)})
        tmp = path.with_name(f".{path.name}.tmp")
        onnx.save(proto, str(tmp))
        tmp.replace(path)


class OnnxRunner:
    name = "onnx"

    def __init__(self, path: Path, device: Device) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.kind == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        self.provider = self.session.get_providers()[0]
        where = device.label if self.provider == "CUDAExecutionProvider" else "CPU"
        self.device = f"{where} (onnxruntime {self.provider})"
        self.inputs = {i.name: ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        feed = {name: np.asarray(inputs[name], dtype=dtype) for name, dtype in self.inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))
