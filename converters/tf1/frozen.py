"""Source plugin for graphs with frozen weights: a TF1 `GraphDef` (`.pb`, as
`convert_variables_to_constants` writes for serving) or a TF2 SavedModel whose signature was
traced at one length (a Keras `unroll=True` model).

A statically unrolled graph holds one copy of the cell per time step. The steps are found by
structure (`cells`), linked by the state each passes to the next, checked to be one cell
repeated (same kind, settings and weight values), and rolled back up into one recurrent layer
that takes any length. Graphs whose recurrence is already a loop get the same recognition. The
reference is the frozen graph itself in a `tf.compat.v1.Session`, served at other lengths as for
TF1 checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexport_converters.tf1 import graph as tf1_graph
from rnnexport_converters.tf1.opened import OpenedTf1
from rnnexport.errors import SourceError, one_line
from rnnexport.options import SourceOptions
from rnnexport.plugins import OpenedSource, Source
from rnnexport.tf import tensorflow

SIGNATURE = "serving_default"


class UnrolledGraphSource(Source):
    name = "unrolled-graph"
    description = "frozen TF1 GraphDefs (.pb, .pbtxt) and SavedModels traced at a fixed length"

    def sniff(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "saved_model.pb").is_file()
        return path.suffix in (".pb", ".pbtxt") and path.is_file()

    def open(self, source: Path | Any, options: SourceOptions) -> OpenedSource:
        if not isinstance(source, Path):
            raise SourceError("the unrolled-graph source reads files, not objects")
        if source.name == "saved_model.pb" or source.is_dir():
            graph = FrozenGraph.from_saved_model(source.parent if source.is_file() else source, options.unsafe)
        else:
            graph = FrozenGraph.from_graph_def(source)
        return OpenedTf1(source, graph, options)


class FrozenGraph:
    """An imported graph whose weights are constants; runs without restoring anything."""

    kind = "unrolled-graph"

    def __init__(self, path: Path, graph_def: Any, title: str, note: str, outputs: dict[str, str],
                 inputs: dict[str, str] | None = None) -> None:
        """`outputs`: a signature's outputs, name -> tensor; `inputs`: its inputs, tensor -> name."""
        tf = tensorflow()
        self.path = path
        self.title = title
        self.note = note
        self.signature_outputs = outputs
        self.signature_inputs = inputs or {}
        self.graph_def = graph_def
        variables = [n.name for n in graph_def.node if n.op in tf1_graph.VARIABLE_OPS]
        if variables:
            raise SourceError(f"{path}: the graph still has variables ({variables[0]}); freeze it with "
                              "convert_variables_to_constants, or give the checkpoint instead")
        self.graph = tf.Graph()
        try:
            with self.graph.as_default():
                tf.compat.v1.import_graph_def(graph_def, name="")
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad graphs
            raise SourceError(f"{path}: TensorFlow cannot import this graph: {one_line(exc, typed=False)}") from None
        self.view = tf1_graph.GraphView(self.graph)

    @classmethod
    def from_graph_def(cls, path: Path) -> FrozenGraph:
        tf = tensorflow()
        graph_def = tf.compat.v1.GraphDef()
        try:
            data = path.read_bytes()
            if path.suffix == ".pbtxt":
                from google.protobuf import text_format

                text_format.Parse(data.decode(), graph_def)
            else:
                graph_def.ParseFromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, ParseError, UnicodeError
            raise SourceError(f"{path}: not a TensorFlow GraphDef ({one_line(exc, typed=False)})") from None
        if not graph_def.node:
            raise SourceError(f"{path}: not a TensorFlow GraphDef (no nodes)")
        from rnnexport_converters.savedmodel.lowering import lowered_frozen

        # A TF2 graph's loop (a While op, or lowered over TensorLists) read as a TF1 loop is.
        tf2 = lowered_frozen(graph_def, path)
        if tf2 is not None:
            return cls(path, tf2[0], "frozen TF2 graph", f"frozen TF2 graph {path.name}, weights held as constants, "
                       "its loop rewritten as a TF1 loop over TensorArrays", tf2[1])
        return cls(path, graph_def, "frozen TF1 graph", f"frozen graph {path.name}, weights held as constants", {})

    @classmethod
    def from_saved_model(cls, path: Path, unsafe: bool) -> FrozenGraph:
        tf = tensorflow()
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        from rnnexport_converters.savedmodel.contents import SavedModelContents

        # Loading runs the SavedModel's restore and init ops: judged before anything runs.
        SavedModelContents(path).check_safe(unsafe)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad SavedModels
            raise SourceError(f"{path}: TensorFlow cannot load this SavedModel: {one_line(exc, typed=False)}") from None
        signatures = dict(loaded.signatures)
        if not signatures:
            raise SourceError(f"{path}: the SavedModel has no signatures to export")
        name = SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0]
        # `loaded` must stay alive while freezing: the signature only references its variables.
        signature = signatures[name]
        frozen = convert_variables_to_constants_v2(signature)
        # The frozen function's outputs are the signature's, flattened (dict keys sorted).
        outputs = {key: tensor.name for key, tensor in zip(sorted(signature.structured_outputs), frozen.outputs)}
        # Its inputs, by keyword, are the frozen function's first inputs in sorted order: what a
        # deployer feeds, whatever fed them in training (a TF1 graph's dataset iterator, say).
        args, kwargs = signature.structured_input_signature
        inputs = {} if args else {tensor.name: key for key, tensor in zip(sorted(kwargs), frozen.inputs)}
        note = f"SavedModel signature '{name}', weights frozen to constants"
        graph = cls(path, frozen.graph.as_graph_def(), "SavedModel traced at a fixed length", note, outputs, inputs)
        del loaded
        return graph

    def session(self) -> Any:
        return tensorflow().compat.v1.Session(graph=self.graph)
