"""What a TFLite export is made of on disk: its files, its op types and the metadata rnnexport
keeps in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnexport.errors import ExportError, one_line

METADATA_NAME = "rnnexport"
RECURRENT_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "WHILE")
# The fused LiteRT kernel of each cell kind that has one.
KERNELS = {"lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM", "rnn": "UNIDIRECTIONAL_SEQUENCE_RNN"}


def read_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The rnnexport metadata of a .tflite file, and how often each op type occurs in it."""
    from tensorflow.lite.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - the flatbuffer reader fails with whatever a bad byte causes
        raise ExportError(f"{path}: not a readable TFLite flatbuffer ({one_line(exc)})") from None
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
