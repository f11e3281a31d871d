"""16x8 files (int16 activations, int8 weights) of the loop form: the float model put in the form
TF 2.21's 16x8 quantizer can quantize, and what it leaves behind taken out.

TF 2.21 quantizes int16 activations with its older quantizer
(`tensorflow/lite/tools/optimize/quantize_model.cc`; its MLIR quantizer's int16 mode gives
activations a zero point of -1, which LiteRT's `FULLY_CONNECTED` refuses). The quantizer has no
16x8 form of `WHILE`, `LESS`, `SELECT_V2` or `DYNAMIC_UPDATE_SLICE` (nor of
`UNIDIRECTIONAL_SEQUENCE_LSTM`, so LSTMs are loops here), so the file is converted with float ops
allowed: those ops stay float, everything in the loop bodies that computes the cell (the
recurrent `FULLY_CONNECTED`, the gates' `LOGISTIC`/`TANH`, `ADD`/`MUL`/`SUB`) is int16, and the
quantizer itself puts a `QUANTIZE` at each body's float inputs and a `DEQUANTIZE` at its outputs, so
`WHILE` carries the state between steps in float. Two faults stood in the way (`for_16x8`):

- `FillQuantizationParams` wants a recorded range for every input of every op it has a property
  for, whatever its type, and the calibrator records ranges of float tensors only: the int32 step
  counters read by a loop condition's `LESS` fail it ("Max and min for dynamic tensors should be
  recorded during calibration"). Every non-float tensor gets a placeholder range, which the
  quantizer reads nowhere else (it quantizes float tensors only).
- The converter stores equal constants once, so an int32 zero and a float zero share a buffer;
  the quantizer rewrites a float constant's buffer in place (int16: two bytes), and the int32
  tensors sharing it are left with a 2-byte buffer LiteRT refuses to load ("Tensor N is
  invalidly specified in schema"). Likewise an equal bias of two `FULLY_CONNECTED`s (both
  directions of a Bidirectional LSTM: the forget gates' ones) is one tensor, quantized with the
  first one's weight scales and read wrongly by the second (the layer lost 25 dB). Every op gets
  its own copy of each constant it reads, and every constant a buffer of its own.

And one of the quantizer's choices: each int16 scale is the recorded range of the calibration
data, with no margin, so a state that grows past it on other inputs is clipped at every step
(an LSTM loop's `h` clipped at its recorded 0.46 took the loop from 51 dB to 32 dB over 12
steps). `quantize` runs the converter's two steps (`calibrate_and_quantize`) apart and widens the
recorded ranges by `HEADROOM` in between: int16 keeps far more resolution than the int8 weights
leave (those alone bound the loop at about 51 dB), so the margin costs nothing measurable, and the
loop then stays at 51 dB from 1 to 200 steps.

The `SHAPE` readers `calibration.read_passed_through` adds for the calibrator are not dropped by this
quantizer (the MLIR one drops them); `drop_readers` does, with the `QUANTIZE` it put before them.

What the quantizer makes of a loop input the body only reads (the projected sequence) is slow: a
`QUANTIZE` of the whole sequence at the body's start and a `DEQUANTIZE` back at its end, on every
step, so a call costs the square of the length. `passed_as_int16` makes such an input int16 in the
loop itself, and in the loops around it that pass it on, so it is quantized once per call.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from rnnexport_converters.tflite.calibration import KEEPS, _bytes, _loops, _model, _opcode

# How far past the calibration data's range int16 activations reach (see the module's docstring).
HEADROOM = 2.0


def _constant_per_use(model: Any, subgraph: Any) -> None:
    """Each op reading a constant another op reads too given a copy of its own."""
    read = set()
    for op in subgraph.operators:
        for position, index in enumerate(int(i) for i in op.inputs):
            if index < 0 or model.buffers[subgraph.tensors[index].buffer].data is None:
                continue
            if index in read:
                subgraph.tensors.append(copy.deepcopy(subgraph.tensors[index]))
                op.inputs[position] = len(subgraph.tensors) - 1
            read.add(index)


def for_16x8(flatbuffer: bytes) -> bytes:
    """The float model with a constant tensor per use, a buffer per constant and a range on
    every non-float tensor."""
    model, schema = _model(flatbuffer)
    for subgraph in model.subgraphs:
        _constant_per_use(model, subgraph)
    owned = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.buffer and model.buffers[tensor.buffer].data is not None:
                if tensor.buffer in owned:
                    model.buffers.append(copy.deepcopy(model.buffers[tensor.buffer]))
                    tensor.buffer = len(model.buffers) - 1
                owned.add(tensor.buffer)
            if tensor.type != schema.TensorType.FLOAT32 and (tensor.quantization is None
                                                             or tensor.quantization.min is None):
                tensor.quantization = schema.QuantizationParametersT()
                tensor.quantization.min, tensor.quantization.max = [0.0], [1.0]
    return _bytes(model)


def _reads(subgraph: Any) -> set[int]:
    return {int(t) for op in subgraph.operators for t in op.inputs} | {int(t) for t in subgraph.outputs}


def drop_readers(flatbuffer: bytes) -> bytes:
    """The quantized model without the calibrator's `SHAPE` readers and the `QUANTIZE` ops only they read."""
    model, schema = _model(flatbuffer)
    quantize = {index for index, code in enumerate(model.operatorCodes)
                if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.QUANTIZE}
    for subgraph in model.subgraphs:
        subgraph.operators = [op for op in subgraph.operators
                              if not subgraph.tensors[int(op.outputs[0])].name.startswith(KEEPS)]
        read = _reads(subgraph)
        subgraph.operators = [op for op in subgraph.operators
                              if op.opcodeIndex not in quantize or int(op.outputs[0]) in read]
    return _bytes(model)


def _widened(calibrated: bytes) -> bytes:
    model, schema = _model(calibrated)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if tensor.type == schema.TensorType.FLOAT32 and q is not None and q.min is not None and len(q.min):
                q.min, q.max = [float(v) * HEADROOM for v in q.min], [float(v) * HEADROOM for v in q.max]
    return _bytes(model)


def quantize(converter: Any, flatbuffer: bytes, _input_type: Any, _output_type: Any, activations_type: Any,
             bias_type: Any, allow_float: bool, *_: Any) -> bytes:
    """In place of the converter's `_quantize` (same arguments): its calibration and its 16x8
    quantizer run apart, on the model `for_16x8` gives, the ranges widened in between."""
    from tensorflow import float32 as tf_float32
    from tensorflow.lite.python.optimize import calibrator

    def number(dtype: Any) -> int:
        return np.dtype(dtype.as_numpy_dtype()).num

    calibrated = calibrator.Calibrator(for_16x8(flatbuffer)).calibrate(converter.representative_dataset)
    # Float I/O here whatever the file's: the quantizer would also retype the loop bodies' inputs
    # ("Unsupported input type INT16 for input tensor 0 of type FLOAT32"); the converter sets the
    # main graph's I/O types after this step.
    quantized = calibrator.Calibrator(_widened(calibrated))._calibrator.QuantizeModel(
        number(tf_float32), number(tf_float32), allow_float, number(activations_type), number(bias_type),
        converter._experimental_disable_per_channel,
        converter._experimental_disable_per_channel_quantization_for_dense_layers)
    return passed_as_int16(drop_readers(bytes(quantized)))


def _name(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _as(tensor: Any, like: Any) -> None:
    tensor.type, tensor.quantization = like.type, copy.deepcopy(like.quantization)


def _readers(subgraph: Any, index: int) -> list[Any]:
    return [op for op in subgraph.operators if index in {int(i) for i in op.inputs}]


def _conversion(model: Any, schema: Any, builtin: int, source: int, target: int) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, schema, builtin)
    op.inputs, op.outputs = np.array([source], np.int32), np.array([target], np.int32)
    return op


def _carry(model: Any, schema: Any, loops: dict[int, tuple[int, Any]], at: int, loop: Any, position: int,
           like: Any) -> None:
    """Make `loop`'s operand and result `position` (in subgraph `at`) of the type and scale of
    `like`: in the loop running subgraph `at` too where `at` only passes it on, else by a
    `QUANTIZE` before `loop` (and a `DEQUANTIZE` after it where its result is read)."""
    subgraph = model.subgraphs[at]
    cond = model.subgraphs[loop.builtinOptions.condSubgraphIndex]
    _as(cond.tensors[int(cond.inputs[position])], like)
    result = int(loop.outputs[position])
    if _readers(subgraph, result) or result in {int(i) for i in subgraph.outputs}:
        subgraph.tensors.append(copy.deepcopy(subgraph.tensors[result]))
        float_result = len(subgraph.tensors) - 1
        for op in _readers(subgraph, result):
            op.inputs = np.array([float_result if int(i) == result else int(i) for i in op.inputs], np.int32)
        subgraph.outputs = np.array([float_result if int(i) == result else int(i) for i in subgraph.outputs], np.int32)
        after = subgraph.operators.index(loop) + 1
        subgraph.operators.insert(after, _conversion(model, schema, schema.BuiltinOperator.DEQUANTIZE, result,
                                                     float_result))
    _as(subgraph.tensors[result], like)
    operand = int(loop.inputs[position])
    passes = [j for j, (given, returned) in enumerate(zip(subgraph.inputs, subgraph.outputs))
              if int(given) == operand and int(returned) == operand]
    if at in loops and passes and _readers(subgraph, operand) == [loop]:
        _as(subgraph.tensors[operand], like)
        outer_at, outer = loops[at]
        _carry(model, schema, loops, outer_at, outer, passes[0], like)
        return
    subgraph.tensors.append(copy.deepcopy(like))
    subgraph.tensors[-1].name = subgraph.tensors[operand].name + b"_int16"
    subgraph.tensors[-1].buffer = 0
    loop.inputs[position] = len(subgraph.tensors) - 1
    subgraph.operators.insert(subgraph.operators.index(loop), _conversion(
        model, schema, schema.BuiltinOperator.QUANTIZE, operand, len(subgraph.tensors) - 1))


def passed_as_int16(flatbuffer: bytes) -> bytes:
    """The quantized model with every loop input that a body quantizes, only reads and hands back
    dequantized carried as int16 (see the module's docstring)."""
    model, schema = _model(flatbuffer)
    loops = {op.builtinOptions.bodySubgraphIndex: (model.subgraphs.index(subgraph), op)
             for subgraph, op in _loops(model, schema)}
    for body_index, (at, loop) in loops.items():
        body = model.subgraphs[body_index]
        producers = {int(o): op for op in body.operators for o in op.outputs}
        for position, (given, returned) in enumerate(zip(list(body.inputs), list(body.outputs))):
            dequantize = producers.get(int(returned))
            if dequantize is None or _name(model, dequantize) != schema.BuiltinOperator.DEQUANTIZE:
                continue
            quantized = int(dequantize.inputs[0])
            quantize = producers.get(quantized)
            if (quantize is None or _name(model, quantize) != schema.BuiltinOperator.QUANTIZE
                    or int(quantize.inputs[0]) != int(given) or _readers(body, int(given)) != [quantize]
                    or _readers(body, int(returned))):
                continue
            body.operators = [op for op in body.operators if op is not quantize and op is not dequantize]
            body.inputs[position] = body.outputs[position] = quantized
            _carry(model, schema, loops, at, loop, position, body.tensors[quantized])
    return _bytes(model)
