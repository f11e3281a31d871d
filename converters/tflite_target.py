"""Target plugin for TFLite flatbuffers: builtin ops, dynamic time, fixed batch, LiteRT runner."""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport import __version__
from rnnexport.device import Device
from rnnexport.errors import ExportError, NotRunnableError
from rnnexport.model import RecurrentModel
from rnnexport.options import FLOAT32_TOLERANCE, ExportOptions, Tolerance
from rnnexport.plugins import Target
from rnnexport.runner import Arrays, split_state, state_names
from rnnexport.tf import tensorflow

METADATA_NAME = "rnnexport"
RECURRENT_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "WHILE")
# Quantized weights trade accuracy; measured worst on the layer-kind fixtures and the real-world
# models: float16 1.2e-3, dynamic-range 4.1e-3.
QUANTIZED_TOLERANCE = {
    "float16": Tolerance(atol=5e-3, rtol=5e-3),
    "dynamic-range": Tolerance(atol=2e-2, rtol=2e-2),
}


def _blocking_message(log: str, options: ExportOptions) -> str:
    """One line naming what stopped the converter and the option that gets past it."""
    ops = sorted(set(re.findall(r"'tf\.([A-Za-z0-9_]+)' op", log)))
    if ops and not options.select_ops:
        return (f"the TFLite converter has no builtin op for {', '.join(ops)}; pass --tflite-select-ops to "
                "allow TensorFlow (Flex) ops, which need a runtime with the Flex delegate")
    if ops:
        return (f"TFLite has neither a builtin nor a Flex op for {', '.join(ops)}; "
                "this model cannot be exported to TFLite (try --to onnx)")
    lines = [line.strip() for line in log.splitlines() if "error" in line.lower()]
    return f"the TFLite converter failed: {(lines or log.strip().splitlines() or ['unknown error'])[0]}"


def _unshare_variable_tensors(model: Any) -> int:
    """Give every stateful operand (a fused LSTM's state) a tensor of its own.

    The converter merges equal constants, so a fused LSTM's zero state can be the very tensor
    another op reads as its own zero input (a GRU loop's initial state of the same shape); the
    LSTM then overwrites that op's input with its final state. Returns how many were split.
    """
    import copy

    from tensorflow.lite.python import schema_py_generated as schema

    split = 0
    for subgraph in model.subgraphs:
        for index, tensor in enumerate(subgraph.tensors):
            if not tensor.isVariable:
                continue
            users = [(op, slot) for op in subgraph.operators for slot, i in enumerate(op.inputs) if i == index]
            for op, slot in users[1:]:
                clone = copy.deepcopy(tensor)
                buffer = schema.BufferT()
                buffer.data = copy.deepcopy(model.buffers[tensor.buffer].data)
                model.buffers.append(buffer)
                clone.buffer = len(model.buffers) - 1
                subgraph.tensors.append(clone)
                op.inputs[slot] = len(subgraph.tensors) - 1
                split += 1
    return split


def _unclip_fused_lstms(model: Any) -> int:
    """Turn off the cell clipping the converter gives every fused Keras LSTM.

    The converter sets `cell_clip=10` on each UNIDIRECTIONAL_SEQUENCE_LSTM it makes from a Keras
    LSTM, which Keras never clips: once a cell state passes 10 (long sequences, forget bias
    1) the export drifts. 0 means no clipping. Returns how many ops were changed.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    changed = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            options = op.builtinOptions
            if isinstance(options, schema.UnidirectionalSequenceLSTMOptionsT) and options.cellClip:
                options.cellClip = 0.0
                changed += 1
    return changed


def _finish(flatbuffer: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Split shared state tensors, unclip fused LSTMs, store rnnexport's metadata."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    _unshare_variable_tensors(model)
    _unclip_fused_lstms(model)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The rnnexport metadata of a .tflite file, and how often each op type occurs in it."""
    from tensorflow.lite.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - the flatbuffer reader fails with whatever a bad byte causes
        raise ExportError(f"{path}: not a readable TFLite flatbuffer ({type(exc).__name__}: {exc})") from None
    meta: dict[str, Any] = {}
    for entry in model.metadata or []:
        if entry.name == METADATA_NAME.encode():
            meta = json.loads(bytes(model.buffers[entry.buffer].data).decode())
    ops: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            if name == "CUSTOM":
                name = model.operatorCodes[op.opcodeIndex].customCode.decode()
            ops[name] = ops.get(name, 0) + 1
    return meta, ops


def step_file(path: Path) -> Path:
    """The file beside `m.tflite` that holds the `step` and `initial_state` signatures."""
    return path.with_name(f"{path.name[: -len(path.suffix)]}.step.tflite")


def _convert(functions: list[Any], model: RecurrentModel, options: ExportOptions) -> bytes:
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, model.module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if options.select_ops:
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    if options.quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if options.quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends; the full text goes to --debug
        raise ExportError(_blocking_message(str(exc), options), log=str(exc)) from None


class TfliteTarget(Target):
    name = "tflite"
    description = "TFLite flatbuffer, builtin ops, fused LSTM kernels, any length at a fixed batch, LiteRT"
    suffix = ".tflite"
    streams = True

    def export(self, model: RecurrentModel, path: Path, options: ExportOptions) -> None:
        from converters.tflite_fusion import fused_lstm, unfusable

        if model.trace_with is None:
            raise ExportError(f"{model.info.path}: this source cannot be traced at a fixed batch for TFLite")
        # The converter needs static TensorList element shapes and initial states: fix the batch.
        function, kept = model.trace_with(fused_lstm, options.batch)
        not_fused = {r.name: kept.get(r.name) or unfusable(r) for r in model.recurrences
                     if kept.get(r.name) or unfusable(r)}
        meta = {
            "version": __version__,
            "source": model.info.path,
            "source_kind": model.info.kind,
            "batch": options.batch,
            "quantize": options.quantize,
            "select_ops": options.select_ops,
        }
        path.write_bytes(_finish(_convert([function.get_concrete_function()], model, options), {
            **meta,
            "fused": {r.name: "UNIDIRECTIONAL_SEQUENCE_LSTM" for r in model.recurrences if r.name not in not_fused},
            "not_fused": not_fused,
        }))
        if options.streaming:
            streaming = model.streaming()
            # The converter names each signature after its function: `step` and `initial_state`.
            functions = [streaming.trace_step(options.batch).get_concrete_function(),
                         streaming.initial_state.get_concrete_function()]
            streamed = _convert(functions, model, options)
            step_file(path).write_bytes(_finish(streamed, {**meta, "states": [s.name for s in streaming.states]}))

    def files(self, path: Path, streaming: bool) -> list[Path]:
        return [path, step_file(path)] if streaming else [path]

    def stream_runner(self, path: Path, device: Device) -> TfliteStreamRunner | None:
        step = step_file(path)
        return TfliteStreamRunner(step) if step.is_file() else None

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            return f.read(8)[4:8] == b"TFL3"

    def probe(self, path: Path, device: Device) -> TfliteProbe:
        return TfliteProbe(path)

    def runner(self, path: Path, device: Device) -> TfliteRunner:
        return TfliteRunner(path)

    def default_tolerance(self, device: Device, path: Path) -> Tolerance:
        meta, _ = read_file(path)
        return QUANTIZED_TOLERANCE.get(meta.get("quantize"), FLOAT32_TOLERANCE[device.kind])

    def describe(self, path: Path) -> dict[str, Any]:
        meta, ops = read_file(path)
        return {
            "batch": meta.get("batch"),
            "quantize": meta.get("quantize"),
            "ops": ops,
            "recurrent_ops": {op: n for op, n in ops.items() if op in RECURRENT_OPS},
            "fused": meta.get("fused", {}),
            "not_fused": meta.get("not_fused", {}),
        }


class TfliteRunner:
    """Runs the file's signature on the LiteRT interpreter (XNNPACK, its default CPU delegate),
    resizing the inputs per case; batches larger than the file's run in chunks of its batch."""

    name = "tflite"

    def __init__(self, path: Path, preserve_all_tensors: bool = False) -> None:
        from ai_edge_litert.interpreter import Interpreter

        flex = sorted(op for op in read_file(path)[1] if op.startswith("Flex"))
        if flex:
            # The LiteRT wheel has no Flex delegate: such a file loads, then fails at every invoke.
            raise NotRunnableError(
                f"{path}: uses TensorFlow (Flex) ops {', '.join(flex)}, which this LiteRT interpreter cannot run"
            )
        try:
            with warnings.catch_warnings():
                # It warns that keeping every tensor costs memory: the point when probing.
                warnings.simplefilter("ignore")
                self.interpreter = Interpreter(model_path=str(path),
                                               experimental_preserve_all_tensors=preserve_all_tensors)
            # Only its details: a live SignatureRunner pins the interpreter's buffers, and
            # LiteRT then refuses to re-allocate them for the next length.
            signature = self.interpreter.get_signature_runner()
            inputs, outputs = signature.get_input_details(), signature.get_output_details()
            del signature
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError with C++ text
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path}: the LiteRT interpreter cannot load it: {text}") from None
        batches = {int(d["shape_signature"][0]) for d in inputs.values()}
        self.batch = batches.pop() if len(batches) == 1 and -1 not in batches else None
        self.inputs = {name: (d["index"], d["dtype"]) for name, d in inputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        self.device = "CPU (LiteRT, XNNPACK delegate)"

    def _invoke(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        interpreter = self.interpreter
        feed = {name: np.asarray(inputs[name], dtype=dtype) for name, (_, dtype) in self.inputs.items()}
        for name, (index, _) in self.inputs.items():
            interpreter.resize_tensor_input(index, feed[name].shape)
        interpreter.allocate_tensors()
        # Fused LSTM states are variable tensors that keep the last invoke's final state; every
        # case is an independent sequence, so start from zeros as the source does.
        interpreter.reset_all_variables()
        for name, (index, _) in self.inputs.items():
            interpreter.set_tensor(index, feed[name])
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self.outputs.items()}

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """After one invoke at the file's batch, every floating-point tensor the interpreter kept."""
        self._invoke(inputs)
        found = {}
        for detail in self.interpreter.get_tensor_details():
            if not np.issubdtype(detail["dtype"], np.floating):
                continue
            try:
                found[detail["name"]] = np.array(self.interpreter.get_tensor(detail["index"]))
            except ValueError:
                continue  # a tensor without data (a scratch buffer the interpreter never filled)
        return found

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        size = next(iter(inputs.values())).shape[0]
        if self.batch is None or size == self.batch:
            return self._invoke(inputs)
        chunks = []
        for start in range(0, size, self.batch):
            rows = np.arange(start, start + self.batch).clip(max=size - 1)
            out = self._invoke({name: value[rows] for name, value in inputs.items()})
            chunks.append({name: value[: size - start] for name, value in out.items()})
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


class TfliteProbe:
    """The file on an interpreter that keeps every tensor, loaded only when a failing export is probed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @functools.cached_property
    def _runner(self) -> TfliteRunner:
        return TfliteRunner(self.path, preserve_all_tensors=True)

    @property
    def batch(self) -> int | None:
        return self._runner.batch

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return self._runner.tensors(inputs)


class TfliteStreamRunner:
    """The `step` and `initial_state` signatures of `m.step.tflite`, through LiteRT's signature
    runners. A batch larger than the file's runs in groups of its batch, each with its own state."""

    name = "tflite"

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path))
            self._step = self.interpreter.get_signature_runner("step")
            self._initial = self.interpreter.get_signature_runner("initial_state")
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError with C++ text
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path}: the LiteRT interpreter cannot load its streaming signatures: {text}") from None
        inputs, outputs = self._step.get_input_details(), self._step.get_output_details()
        self.batch = int(next(iter(inputs.values()))["shape_signature"][0])
        self.inputs = {name: d["dtype"] for name, d in inputs.items()}
        self.states = state_names(inputs, outputs)
        self.device = "CPU (LiteRT, XNNPACK delegate)"

    def initial_state(self, batch: int) -> Arrays:
        state = self._initial(batch=np.asarray(batch, np.int32))
        return {name: np.array(value) for name, value in state.items()}

    def step(self, inputs: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        given = {**inputs, **state}
        size = next(iter(given.values())).shape[0]
        groups = []
        for start in range(0, size, self.batch):
            rows = np.arange(start, start + self.batch).clip(max=size - 1)
            out = self._step(**{name: np.asarray(given[name][rows], dtype) for name, dtype in self.inputs.items()})
            groups.append({name: np.array(value[: size - start]) for name, value in out.items()})
        merged = {name: np.concatenate([g[name] for g in groups]) for name in groups[0]}
        return split_state(merged, self.states)
