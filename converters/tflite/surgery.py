"""Putting LiteRT's fused sequence kernels in place of the custom ops the converter left for
rnnexport's stubs, in a form that keeps no state between calls and takes any batch.

LiteRT's `UNIDIRECTIONAL_SEQUENCE_LSTM` and `UNIDIRECTIONAL_SEQUENCE_RNN` read their initial state
from variable tensors and leave their final state there, so a second call starts where the
first ended, and a variable tensor has the batch it was written with. Here each state tensor
is the output of a `FILL` of zeros shaped `[batch, units]` from the input, placed just before
the kernel: every call zeroes it again, and its batch follows the input's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnexport.errors import ExportError
from rnnexport_converters.tflite.layers import Stub

FUSED_ACTIVATION = {"tanh": "TANH", "relu": "RELU", "linear": "NONE"}


class _Graph:
    """The main subgraph of a flatbuffer model object, with helpers to add tensors and ops."""

    def __init__(self, model: Any, subgraph: Any) -> None:
        from tensorflow.lite.python import schema_py_generated as schema

        self.schema = schema
        self.model = model
        self.subgraph = subgraph

    def constant(self, name: str, value: np.ndarray) -> int:
        schema = self.schema
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(value, dtype=np.float32).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        return self._tensor(name, value.shape, value.shape, len(self.model.buffers) - 1)

    def typed_constant(self, name: str, value: np.ndarray, tensor_type: int, quantization: Any = None) -> int:
        """A constant of any type, with the quantization of the tensor it stands for."""
        buffer = self.schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        index = self._tensor(name, value.shape, value.shape, len(self.model.buffers) - 1)
        self.subgraph.tensors[index].type = tensor_type
        self.subgraph.tensors[index].quantization = quantization
        return index

    def _tensor(self, name: str, shape: tuple[int, ...], signature: tuple[int, ...], buffer: int = 0,
                variable: bool = False) -> int:
        tensor = self.schema.TensorT()
        tensor.name = name.encode()
        tensor.shape = np.array(shape, dtype=np.int32)
        tensor.shapeSignature = np.array(signature, dtype=np.int32)
        tensor.type = self.schema.TensorType.FLOAT32
        tensor.buffer = buffer
        tensor.isVariable = variable
        self.subgraph.tensors.append(tensor)
        return len(self.subgraph.tensors) - 1

    def state(self, name: str, units: int) -> int:
        """A new state tensor of [batch, units], declared empty as `make_state` says why."""
        return self._tensor(name, (0, units), (-1, units), variable=True)

    def make_state(self, index: int, size: int) -> None:
        """Turn tensor `index` into a kernel's state tensor of [batch, size].

        Declared empty: the interpreter first places variable tensors in its persistent arena,
        and the FILL then makes them dynamic; a tensor of size zero there moves nothing else (a
        DEQUANTIZE of a constant computes its output into that arena only once)."""
        tensor = self.subgraph.tensors[index]
        tensor.shape = np.array((0, size), dtype=np.int32)
        tensor.shapeSignature = np.array((-1, size), dtype=np.int32)
        tensor.isVariable = True

    def opcode(self, builtin: int) -> int:
        for index, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return index
        code = self.schema.OperatorCodeT()
        code.builtinCode = builtin
        # Codes above 127 are only in `builtinCode`; the deprecated field holds the placeholder.
        code.deprecatedBuiltinCode = min(builtin, 127)
        code.version = 1
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def op(self, builtin: str, inputs: list[int], outputs: list[int], options: Any, options_type: str) -> Any:
        schema = self.schema
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode(getattr(schema.BuiltinOperator, builtin))
        op.inputs = np.array(inputs, dtype=np.int32)
        op.outputs = np.array(outputs, dtype=np.int32)
        op.builtinOptionsType = getattr(schema.BuiltinOptions, options_type)
        op.builtinOptions = options
        return op

    def fill(self, shape: int, zero: int, output: int) -> Any:
        """Zeros into state tensor `output`, shaped [batch, size] by int32 tensor `shape`."""
        return self.op("FILL", [shape, zero], [output], self.schema.FillOptionsT(), "FillOptions")


def _states(graph: _Graph, op: Any, stub: Stub, count: int) -> list[int]:
    """The kernel's state tensors: the stub's own state results where it has them (they then hold
    the final state for the ops that read them after the kernel), new tensors otherwise."""
    outputs = [int(i) for i in op.outputs]
    sizes = (stub.weights.recurrent_kernel.shape[0], stub.recurrence.units)[:count]
    if len(outputs) == 1 + count:
        for index, size in zip(outputs[1:], sizes):
            graph.make_state(index, size)
        return outputs[1:]
    return [graph.state(f"{stub.name}/{role}", size) for role, size in zip("hc", sizes)]


def _activation(schema: Any, stub: Stub) -> int:
    return getattr(schema.ActivationFunctionType, FUSED_ACTIVATION[stub.recurrence.activation])


# The tensors LiteRT's calibrator records an LSTM's gates in (its logging kernel wants all five,
# `tensorflow/lite/tools/optimize/calibration/builtin_logging_ops/lstm.cc`), which the quantizer
# turns into the integer kernel's scales; the converter gives its own fused LSTMs the same.
INTERMEDIATES = ("input_to_input", "input_to_forget", "input_to_cell", "input_to_output", "effective_hidden_scale")
# The integer kernel's int16 cell state takes its scale from the cell clip; calibrated without one,
# LSTM_S's kernel gave noise (-0.8 dB). An LSTM with no clip is clipped here, as the converter clips
# Keras LSTMs at 10: at 64 the scale is 2^-9, and tanh(64) is 1 in float32, so only a cell state
# beyond it remembers less (LSTM_S's reached 23 on its calibration clips).
INTEGER_CELL_CLIP = 64.0


def _lstm(graph: _Graph, stub: Stub, op: Any, zero: int, batch: int | None) -> list[Any]:
    schema = graph.schema
    weights, recurrence, tag = stub.weights, stub.recurrence, stub.name
    x, h_shape, c_shape = (int(i) for i in op.inputs[:3])
    kernels = np.split(weights.kernel, 4, axis=1)
    recurrents = np.split(weights.recurrent_kernel, 4, axis=1)
    biases = np.split(weights.input_bias + weights.recurrent_bias, 4)
    # Keras's gate order i, f, c, o is the kernel's operand order.
    inputs = [x]
    inputs += [graph.constant(f"{tag}/input_to_{g}", k.T) for g, k in zip("ifco", kernels)]
    inputs += [graph.constant(f"{tag}/recurrent_to_{g}", r.T) for g, r in zip("ifco", recurrents)]
    if weights.peepholes is None:
        inputs += [-1, -1, -1]
    else:
        inputs += [graph.constant(f"{tag}/cell_to_{g}", p) for g, p in zip("ifo", weights.peepholes)]
    inputs += [graph.constant(f"{tag}/{g}_bias", b) for g, b in zip("ifco", biases)]
    inputs += [-1 if weights.projection is None else graph.constant(f"{tag}/projection", weights.projection.T), -1]
    h, c = _states(graph, op, stub, 2)
    inputs += [h, c, -1, -1, -1, -1]
    options = schema.UnidirectionalSequenceLSTMOptionsT()
    options.fusedActivationFunction = _activation(schema, stub)
    options.cellClip = float(recurrence.cell_clip or (0.0 if batch is None else INTEGER_CELL_CLIP))
    options.projClip = float(recurrence.proj_clip or 0.0)
    options.timeMajor = False
    kernel = graph.op("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, [int(op.outputs[0])], options,
                      "UnidirectionalSequenceLSTMOptions")
    if batch is None:
        return [graph.fill(h_shape, zero, h), graph.fill(c_shape, zero, c), kernel]
    for index in (h, c):
        size = int(graph.subgraph.tensors[index].shape[-1])
        graph.subgraph.tensors[index].shape = np.array((batch, size), dtype=np.int32)
        graph.subgraph.tensors[index].shapeSignature = None
    kernel.intermediates = np.array([graph._tensor(f"{tag}/{name}_intermediate", (0,), (0,)) for name in INTERMEDIATES],
                                    dtype=np.int32)
    return [kernel]


def _rnn(graph: _Graph, stub: Stub, op: Any, zero: int, batch: int | None) -> list[Any]:
    schema = graph.schema
    weights, tag = stub.weights, stub.name
    x, h_shape = (int(i) for i in op.inputs[:2])
    (h,) = _states(graph, op, stub, 1)
    inputs = [x, graph.constant(f"{tag}/input_weights", weights.kernel.T),
              graph.constant(f"{tag}/recurrent_weights", weights.recurrent_kernel.T),
              graph.constant(f"{tag}/bias", weights.input_bias + weights.recurrent_bias), h]
    options = schema.SequenceRNNOptionsT()
    options.timeMajor = False
    options.fusedActivationFunction = _activation(schema, stub)
    kernel = graph.op("UNIDIRECTIONAL_SEQUENCE_RNN", inputs, [int(op.outputs[0])], options, "SequenceRNNOptions")
    return [graph.fill(h_shape, zero, h), kernel]


def _drop_unused_opcodes(model: Any) -> None:
    used = sorted({op.opcodeIndex for subgraph in model.subgraphs for op in subgraph.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[old] for old in used]
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def replace_stubs(flatbuffer: bytes, stubs: Mapping[str, Stub], calibrated_batch: int | None = None) -> bytes:
    """The flatbuffer with every stub's custom op replaced by its fused kernel. With
    `calibrated_batch`, as the calibrator and quantizer take an LSTM kernel (a full-integer file):
    its states variable tensors of that fixed batch, with no FILL (the quantizer gives them their
    integer types; `reset_quantized_states` fills them after), and its gates' `INTERMEDIATES`."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    done = set()
    # A stub may sit in a branch of an IF (a masked layer's post-padded branch).
    for subgraph in model.subgraphs:
        graph = _Graph(model, subgraph)
        zero = None
        operators = []
        for op in subgraph.operators:
            name = (model.operatorCodes[op.opcodeIndex].customCode or b"").decode()
            if name not in stubs:
                operators.append(op)
                continue
            stub = stubs[name]
            zero = graph.constant("rnnexport/zero", np.zeros((), np.float32)) if zero is None else zero
            operators += (_lstm if stub.recurrence.cell == "lstm" else _rnn)(graph, stub, op, zero, calibrated_batch)
            done.add(name)
        subgraph.operators = operators
    missing = sorted(set(stubs) - done)
    if missing:
        raise ExportError(f"the TFLite converter did not keep rnnexport's fused-kernel stubs {', '.join(missing)}")
    _drop_unused_opcodes(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def reset_quantized_states(flatbuffer: bytes) -> bytes:
    """The flatbuffer with each converter-made `UNIDIRECTIONAL_SEQUENCE_LSTM` given its initial
    state again before every call: a `FILL` of the state's zero (its zero point, in its integer
    type) into each state tensor, shaped as the tensor (the file has a fixed batch). Without it,
    a call starts from the previous call's final state."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.INT16: np.int16, schema.TensorType.FLOAT32: np.float32}
    lstm = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    for subgraph in model.subgraphs:
        graph = _Graph(model, subgraph)
        operators = []
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == lstm:
                for index in (int(i) for i in op.inputs[18:20]):
                    state = subgraph.tensors[index]
                    q = state.quantization
                    zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
                    shape = graph.typed_constant(f"{state.name.decode()}/shape", np.array(state.shape, np.int32),
                                                 schema.TensorType.INT32)
                    graph.make_state(index, int(state.shape[-1]))
                    value = graph.typed_constant(f"{state.name.decode()}/zero", np.array(zero, dtypes[state.type]),
                                                 state.type, q)
                    operators.append(graph.fill(shape, value, index))
            operators.append(op)
        subgraph.operators = operators
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
