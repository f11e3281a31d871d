"""Writing a TFLite export: the RecurrentModel traced at a fixed batch with fusable LSTMs in the
form the converter fuses, converted with builtin ops, then patched and given rnnexport's metadata."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.version import __version__
from rnnexport.errors import ExportError
from rnnexport.model import RecurrentModel
from rnnexport.tf import tensorflow
from rnnexport_converters.tflite.files import METADATA_NAME, step_file
from rnnexport_converters.tflite.fusion import fused_lstm, unfusable
from rnnexport_converters.tflite.target import TfliteOptions


def _blocking_message(log: str, options: TfliteOptions) -> str:
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


def _convert(functions: list[Any], model: RecurrentModel, options: TfliteOptions) -> bytes:
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


def write(model: RecurrentModel, path: Path, options: TfliteOptions, streaming: bool) -> None:
    """Write `model` to `path` (and its streaming file beside it when asked)."""
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
    if streaming:
        entry_points = model.streaming()
        # The converter names each signature after its function: `step` and `initial_state`.
        functions = [entry_points.trace_step(options.batch).get_concrete_function(),
                     entry_points.initial_state.get_concrete_function()]
        streamed = _convert(functions, model, options)
        step_file(path).write_bytes(_finish(streamed, {**meta, "states": [s.name for s in entry_points.states]}))
