"""Target plugin for ONNX files with named dynamic batch and time, run on onnxruntime."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport import __version__
from rnnexport.device import Device
from rnnexport.errors import ExportError
from rnnexport.model import RecurrentModel, StateInfo, TensorInfo
from rnnexport.options import FLOAT32_TOLERANCE, ExportOptions, Tolerance
from rnnexport.plugins import Target
from rnnexport.runner import Arrays, split_state, state_names
from rnnexport.tf import tensorflow

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")
META = "rnnexport."
ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
             "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _declare_io_shapes(proto: Any, specs: Iterable[TensorInfo]) -> None:
    """Graph inputs and outputs take the RecurrentModel's shapes, with `batch` and `time` named
    (tf2onnx leaves `unk__N`, or no shape where a fused op feeds an output directly)."""
    by_name = {t.name: t for t in specs}
    for value in (*proto.graph.input, *proto.graph.output):
        spec = by_name.get(value.name)
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


def _state_specs(states: Iterable[StateInfo]) -> list[TensorInfo]:
    return [TensorInfo(name, s.dtype, (None, s.size), None) for s in states for name in (s.name, s.next_name)]


def _to_onnx(function: Any, options: ExportOptions, handlers: Any = None) -> Any:
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=list(function.input_signature), opset=options.opset,
            custom_op_handlers=handlers,
        )
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises anything; the user needs one line
        raise ExportError(f"tf2onnx cannot convert this model: {str(exc).splitlines()[0]}") from None
    return proto


def _save(proto: Any, path: Path, model: RecurrentModel, meta: Mapping[str, str]) -> None:
    import onnx

    _set_metadata(proto, {
        META + "version": __version__,
        META + "source": model.info.path,
        META + "source_kind": model.info.kind,
        **meta,
    })
    proto.producer_name = "rnnexport"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def streaming_files(path: Path) -> tuple[Path, Path]:
    """The step and initial-state files written beside a streaming export `m.onnx`."""
    stem = path.name[: -len(path.suffix)]
    return path.with_name(f"{stem}.step.onnx"), path.with_name(f"{stem}.initial_state.onnx")


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
    streams = True

    def export(self, model: RecurrentModel, path: Path, options: ExportOptions) -> None:
        import os

        from converters.onnx_fusion import FusedOps

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
        proto = _to_onnx(function, options, fusion.handlers())
        _declare_io_shapes(proto, (*model.info.inputs, *model.info.outputs))
        _save(proto, path, model, {META + "fused": json.dumps(fusion.fused), META + "not_fused": json.dumps(not_fused)})
        if options.streaming:
            streaming = model.streaming()
            step_path, initial_path = streaming_files(path)
            states = json.dumps([s.name for s in streaming.states])
            step = _to_onnx(streaming.step, options)
            _declare_io_shapes(step, (*model.info.inputs, *model.info.outputs, *_state_specs(streaming.states)))
            _save(step, step_path, model, {META + "entry_point": "step", META + "states": states})
            initial = _to_onnx(streaming.initial_state, options)
            _declare_io_shapes(initial, _state_specs(streaming.states))
            _save(initial, initial_path, model, {META + "entry_point": "initial_state", META + "states": states})

    def files(self, path: Path, streaming: bool) -> list[Path]:
        return [path, *streaming_files(path)] if streaming else [path]

    def stream_runner(self, path: Path, device: Device) -> OnnxStreamRunner | None:
        step, initial = streaming_files(path)
        if not step.is_file():
            return None
        if not initial.is_file():
            raise ExportError(f"{initial}: missing; the streaming export {step} needs it")
        return OnnxStreamRunner(OnnxRunner(step, device), OnnxRunner(initial, device))

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".onnx"

    def probe(self, path: Path, device: Device) -> OnnxProbe:
        return OnnxProbe(path, device)

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


class OnnxStreamRunner:
    """A streaming ONNX export: `m.step.onnx` runs one chunk, `m.initial_state.onnx` takes `batch`."""

    name = "onnx"

    def __init__(self, step: OnnxRunner, initial: OnnxRunner) -> None:
        self._step, self._initial = step, initial
        self.device = step.device
        self.states = state_names(step.inputs, step.outputs)

    def initial_state(self, batch: int) -> Arrays:
        return self._initial.run({"batch": np.asarray(batch)})

    def step(self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        return split_state(self._step.run({**inputs, **state}), self.states)


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


class OnnxProbe:
    """The export with every floating-point tensor of its main graph made an output."""

    batch = None

    def __init__(self, path: Path, device: Device) -> None:
        self.path, self.device = path, device

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        import onnx

        proto = onnx.shape_inference.infer_shapes(onnx.load(str(self.path)))
        declared = {v.name: v for v in (*proto.graph.value_info, *proto.graph.output)}
        exposed = {v.name for v in proto.graph.output}
        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
        for node in proto.graph.node:
            for name in node.output:
                info = declared.get(name)
                if name and name not in exposed and info is not None and info.type.tensor_type.elem_type in floats:
                    proto.graph.output.append(info)
                    exposed.add(name)
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.onnx"
            onnx.save(proto, str(probe))
            return OnnxRunner(probe, self.device).run(inputs)
