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

    def __init__(self, model: Any) -> None:
        from tensorflow.lite.python import schema_py_generated as schema

        self.schema = schema
        self.model = model
        self.subgraph = model.subgraphs[0]

    def constant(self, name: str, value: np.ndarray) -> int:
        schema = self.schema
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(value, dtype=np.float32).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        return self._tensor(name, value.shape, value.shape, len(self.model.buffers) - 1)

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
        # Declared empty: the interpreter first places variable tensors in its persistent arena,
        # and the FILL then makes them dynamic; a tensor of size zero there moves nothing else
        # (a DEQUANTIZE of a constant computes its output into that arena only once).
        return self._tensor(name, (0, units), (-1, units), variable=True)

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
        return self.op("FILL", [shape, zero], [output], self.schema.FillOptionsT(), "FillOptions")


def _lstm(graph: _Graph, stub: Stub, x: int, shape: int, zero: int, y: int) -> list[Any]:
    schema = graph.schema
    weights, units = stub.weights, stub.recurrence.units
    kernels = np.split(weights.kernel, 4, axis=1)
    recurrents = np.split(weights.recurrent_kernel, 4, axis=1)
    biases = np.split(weights.input_bias + weights.recurrent_bias, 4)
    tag = stub.name
    # Keras's gate order i, f, c, o is the kernel's operand order.
    inputs = [x]
    inputs += [graph.constant(f"{tag}/input_to_{g}", k.T) for g, k in zip("ifco", kernels)]
    inputs += [graph.constant(f"{tag}/recurrent_to_{g}", r.T) for g, r in zip("ifco", recurrents)]
    inputs += [-1, -1, -1]
    inputs += [graph.constant(f"{tag}/{g}_bias", b) for g, b in zip("ifco", biases)]
    inputs += [-1, -1]
    h, c = graph.state(f"{tag}/h", units), graph.state(f"{tag}/c", units)
    inputs += [h, c, -1, -1, -1, -1]
    options = schema.UnidirectionalSequenceLSTMOptionsT()
    options.fusedActivationFunction = getattr(schema.ActivationFunctionType,
                                              FUSED_ACTIVATION[stub.recurrence.activation])
    options.cellClip = 0.0
    options.projClip = 0.0
    options.timeMajor = False
    kernel = graph.op("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, [y], options, "UnidirectionalSequenceLSTMOptions")
    return [graph.fill(shape, zero, h), graph.fill(shape, zero, c), kernel]


def _rnn(graph: _Graph, stub: Stub, x: int, shape: int, zero: int, y: int) -> list[Any]:
    schema = graph.schema
    weights, tag = stub.weights, stub.name
    h = graph.state(f"{tag}/h", stub.recurrence.units)
    inputs = [x, graph.constant(f"{tag}/input_weights", weights.kernel.T),
              graph.constant(f"{tag}/recurrent_weights", weights.recurrent_kernel.T),
              graph.constant(f"{tag}/bias", weights.input_bias + weights.recurrent_bias), h]
    options = schema.SequenceRNNOptionsT()
    options.timeMajor = False
    options.fusedActivationFunction = getattr(schema.ActivationFunctionType,
                                              FUSED_ACTIVATION[stub.recurrence.activation])
    kernel = graph.op("UNIDIRECTIONAL_SEQUENCE_RNN", inputs, [y], options, "SequenceRNNOptions")
    return [graph.fill(shape, zero, h), kernel]


def _drop_unused_opcodes(model: Any) -> None:
    used = sorted({op.opcodeIndex for subgraph in model.subgraphs for op in subgraph.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[old] for old in used]
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def replace_stubs(flatbuffer: bytes, stubs: Mapping[str, Stub]) -> bytes:
    """The flatbuffer with every stub's custom op replaced by its fused kernel."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = _Graph(model)
    zero = graph.constant("rnnexport/zero", np.zeros((), np.float32))
    done = set()
    operators = []
    for op in graph.subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = (code.customCode or b"").decode()
        if name not in stubs:
            operators.append(op)
            continue
        stub = stubs[name]
        x, shape = (int(i) for i in op.inputs[:2])
        build = _lstm if stub.recurrence.cell == "lstm" else _rnn
        operators += build(graph, stub, x, shape, zero, int(op.outputs[0]))
        done.add(name)
    missing = sorted(set(stubs) - done)
    if missing:
        raise ExportError(f"the TFLite converter did not keep rnnexport's fused-kernel stubs {', '.join(missing)}")
    graph.subgraph.operators = operators
    _drop_unused_opcodes(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
