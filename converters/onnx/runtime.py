"""Running an ONNX export on onnxruntime: the sequence file, the streaming files, and a probe of
every intermediate tensor. Needs onnxruntime (and onnx for the probe), never tf2onnx."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rnnexport.device import Device
from rnnexport.errors import ExportError, one_line
from rnnexport.runner import Arrays, Closable, split_state, state_names
from rnnexport.tf import threads

ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
             "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


class OnnxStreamRunner(Closable):
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

    def close(self) -> None:
        self._step.close()
        self._initial.close()


class OnnxRunner(Closable):
    name = "onnx"

    def __init__(self, path: Path, device: Device) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.kind == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = options.inter_op_num_threads = threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{path}: onnxruntime cannot load it: {one_line(exc, typed=False)}") from None
        self.provider = self.session.get_providers()[0]
        where = device.label if self.provider == "CUDAExecutionProvider" else "CPU"
        self.device = f"{where} (onnxruntime {self.provider})"
        self.inputs = {i.name: ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        feed = {name: np.asarray(inputs[name], dtype=dtype) for name, dtype in self.inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))

    def close(self) -> None:
        # onnxruntime frees a session's memory and threads when the last reference goes.
        self.session = None


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
