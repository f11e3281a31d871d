"""What a TFLite export is made of on disk: its files, its op types and the metadata rnnexport
keeps in it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnexport.errors import ExportError, one_line

METADATA_NAME = "rnnexport"
RECURRENT_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "WHILE")
# The fused LiteRT kernel of each cell kind that has one.
KERNELS = {"lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM", "rnn": "UNIDIRECTIONAL_SEQUENCE_RNN"}


def read_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The rnnexport metadata of a .tflite file, and how often each op type occurs in it. Reads
    the flatbuffer with LiteRT's own schema: checking a TFLite file needs no TensorFlow."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        raw = path.read_bytes()
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    except OSError as exc:
        raise ExportError(f"{path}: cannot read it ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - the flatbuffer reader fails with whatever a bad byte causes
        raise ExportError(f"{path}: not a readable TFLite flatbuffer ({one_line(exc)})") from None
    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    meta: dict[str, Any] = {}
    for entry in model.metadata or []:
        if entry.name == METADATA_NAME.encode():
            buffer = model.buffers[entry.buffer]
            # Files over 2 GiB keep buffers after the flatbuffer, at an offset.
            data = raw[buffer.offset: buffer.offset + buffer.size] if buffer.offset else bytes(buffer.data)
            meta = json.loads(data.decode())
    ops: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            if name == "CUSTOM":
                name = code.customCode.decode()
            ops[name] = ops.get(name, 0) + 1
    return meta, ops


def step_file(path: Path) -> Path:
    """The file beside `m.tflite` that holds the `step` and `initial_state` signatures."""
    return path.with_name(f"{path.name[: -len(path.suffix)]}.step.tflite")


def with_metadata(flatbuffer: bytes, metadata: Mapping[str, Any]) -> bytes:
    """The flatbuffer with rnnexport's metadata stored in it (replacing any it held)."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _signatures(path: Path) -> list[Any]:
    """Each signature of the file at `path` as an entry point, ports as LiteRT declares them."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from rnnexport.exported import EntryPoint, Port, dims

    interpreter = Interpreter(str(path))
    entry_points = []
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)
        ports = [tuple(Port(key, np.dtype(d["dtype"]).name, dims(d["shape_signature"]))
                       for key, d in sorted(details.items()))
                 for details in (runner.get_input_details(), runner.get_output_details())]
        entry_points.append(EntryPoint(name, path.name, *ports))
    return entry_points


def contents(path: Path) -> Any:
    """`inspect` of a TFLite export: the file at `path` and the step file beside it."""
    from rnnexport.exported import ExportContents, states

    meta, ops = read_file(path)
    entry_points, carried = [], ()
    for file in (path, step_file(path)):
        if not file.is_file():
            continue
        file_meta = read_file(file)[0] if file != path else meta
        points = _signatures(file)
        entry_points += points
        inputs = {p.name: p.dims for e in points if e.name == "step" for p in e.inputs}
        if inputs and "states" in file_meta:
            carried = states(file_meta["states"], inputs, file_meta.get("state_holds", {}))
    batch = "any (resized per call)" if meta.get("batch") is None else f"fixed at {meta['batch']}"
    if meta.get("batch_fixed_because"):
        batch += f" ({meta['batch_fixed_because']})"
    notes = tuple(f"{layer} not fused: {why}" for layer, why in meta.get("not_fused", {}).items())
    if meta.get("quantize"):
        notes += (f"weights quantized: {meta['quantize']}",)
    return ExportContents(str(path), "tflite", tuple(entry_points),
                          {op: n for op, n in ops.items() if op in RECURRENT_OPS}, batch, carried,
                          meta.get("source"), meta.get("parity"), notes)


def record_parity(path: Path, summary: Mapping[str, Any]) -> None:
    """Store the parity summary in the file's metadata, replacing the file once it is written."""
    meta, _ = read_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(with_metadata(path.read_bytes(), {**meta, "parity": dict(summary)}))
    tmp.replace(path)
