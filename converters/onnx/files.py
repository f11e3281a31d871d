"""What an ONNX export is made of on disk: its files and the metadata rnnexport keeps in them.
Needs the `onnx` package only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")
META = "rnnexport."


def streaming_files(path: Path) -> tuple[Path, Path]:
    """The step and initial-state files written beside a streaming export `m.onnx`."""
    stem = path.name[: -len(path.suffix)]
    return path.with_name(f"{stem}.step.onnx"), path.with_name(f"{stem}.initial_state.onnx")


def set_metadata(proto: Any, values: Mapping[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def recurrent_ops(proto: Any) -> dict[str, int]:
    """Recurrent op types in the graph and the branches of its `If` ops (a loop that was not
    fused shows up as Loop; a masked layer as its fused op and the Loop run for masks with holes)."""
    counts: dict[str, int] = {}
    graphs = [proto.graph]
    while graphs:
        for node in graphs.pop().node:
            if node.op_type in RECURRENT_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            if node.op_type == "If":
                graphs += [a.g for a in node.attribute if a.name in ("then_branch", "else_branch")]
    return counts


