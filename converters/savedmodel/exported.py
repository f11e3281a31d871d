"""What an rnnexport SavedModel export says of itself: rnnexport's metadata, kept in
`assets.extra/rnnexport.json` (the SavedModel format leaves `assets.extra` to the tools that write
it; TensorFlow never reads it), and its signatures as `inspect` shows them, read from
`saved_model.pb` without loading anything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnexport_converters.savedmodel.contents import LOOP_OPS, SavedModelContents

METADATA = Path("assets.extra") / "rnnexport.json"
# The signatures an rnnexport export declares, in the order `inspect` lists them.
ORDER = ("serving_default", "step", "initial_state")


def read_metadata(path: Path) -> dict[str, Any] | None:
    """rnnexport's metadata of the SavedModel at `path` (None: another tool wrote it)."""
    file = path / METADATA
    return json.loads(file.read_text()) if file.is_file() else None


def write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Store `metadata`, replacing what was there once the new file is complete."""
    file = path / METADATA
    file.parent.mkdir(exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    tmp.replace(file)


def _ports(tensors: Mapping[str, Any]) -> tuple[Any, ...]:
    from tensorflow.python.framework import dtypes

    from rnnexport.exported import Port, dims

    return tuple(Port(key, dtypes.as_dtype(info.dtype).name,
                      dims(None if d.size < 0 else d.size for d in info.tensor_shape.dim))
                 for key, info in sorted(tensors.items()))


def contents(path: Path) -> Any:
    """`inspect` of a SavedModel export; None where rnnexport did not write it."""
    from rnnexport.exported import EntryPoint, ExportContents, states

    meta = read_metadata(path)
    if meta is None:
        return None
    saved = SavedModelContents(path)
    signatures = saved.meta_graph.signature_def
    names = sorted(saved.signatures, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    entry_points = tuple(EntryPoint(name, f"signature '{name}'", _ports(signatures[name].inputs),
                                    _ports(signatures[name].outputs)) for name in names)
    loops = sum(1 for f in saved.functions.values() for node in f.node_def if node.op in LOOP_OPS)
    carried = ()
    if "step" in signatures:
        inputs = {p.name: p.dims for p in entry_points[names.index("step")].inputs}
        carried = states(meta.get("states", []), inputs, meta.get("state_holds", {}))
    notes = ("recurrent layers run as TensorFlow While loops (Keras's own computation)",) if loops else ()
    return ExportContents(str(path), "savedmodel", entry_points, {"While": loops} if loops else {},
                          "any (dynamic 'batch' dimension)", carried, meta.get("source"), meta.get("parity"), notes)
