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
  invalidly specified in schema"). Every constant gets a buffer of its own.

The `SHAPE` readers `calibration.read_passed_through` adds for the calibrator are not dropped by this
quantizer (the MLIR one drops them); `drop_readers` does, with the `QUANTIZE` it put before them.
"""

from __future__ import annotations

import copy
from typing import Any

from rnnexport_converters.tflite.calibration import KEEPS, _bytes, _model


def for_16x8(flatbuffer: bytes) -> bytes:
    """The float model with a buffer per constant and a range on every non-float tensor."""
    model, schema = _model(flatbuffer)
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
