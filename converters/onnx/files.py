"""What an ONNX export is made of on disk: its files and the metadata rnnexport keeps in them.
Needs the `onnx` package only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan", "DynamicQuantizeLSTM")
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




def _ports(values: Any) -> tuple[Any, ...]:
    import onnx

    from rnnexport.exported import Port

    return tuple(Port(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                      tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                            for d in v.type.tensor_type.shape.dim)) for v in values)


def contents(path: Path) -> Any:
    """`inspect` of an ONNX export: the file at `path` and the streaming files beside it."""
    import json

    import onnx

    from rnnexport.errors import ExportError, one_line
    from rnnexport.exported import EntryPoint, ExportContents, states

    files = [path, *(f for f in streaming_files(path) if f.is_file())]
    protos = {}
    for file in files:
        try:
            protos[file] = onnx.load(str(file), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others for a bad file
            raise ExportError(f"{file}: not a readable ONNX file ({one_line(exc, typed=False)})") from None
    meta = {file: {p.key: p.value for p in proto.metadata_props} for file, proto in protos.items()}
    entry_points, carried = [], ()
    for file, proto in protos.items():
        name = meta[file].get(META + "entry_point", "sequence")
        inputs, outputs = _ports(proto.graph.input), _ports(proto.graph.output)
        entry_points.append(EntryPoint(name, file.name, inputs, outputs))
        if name == "step" and META + "states" in meta[file]:
            carried = states(json.loads(meta[file][META + "states"]), {p.name: p.dims for p in inputs},
                             json.loads(meta[file].get(META + "state_holds", "{}")))
    first = entry_points[0].inputs[0].dims if entry_points[0].inputs else ()
    batch = "any (dynamic 'batch' dimension)" if first and isinstance(first[0], str) else f"fixed at {first[0]}"
    main = meta[path]
    return ExportContents(
        str(path), "onnx", tuple(entry_points), recurrent_ops(protos[path]), batch, carried,
        main.get(META + "source"), json.loads(main[META + "parity"]) if META + "parity" in main else None,
        tuple(f"{layer} not fused: {why}" for layer, why in json.loads(main.get(META + "not_fused", "{}")).items()))
