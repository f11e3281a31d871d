"""What a TF2 SavedModel directory holds, read from its protos without running anything: the
serving signature, the tf.keras model config if a tf.keras version wrote one, and the ops its
functions would run.

tf.keras 2.5 to 2.15 writes the Keras metadata into `keras_metadata.pb` (a `SavedMetadata`
proto: one JSON string per saved object, the root's holding the model's `config`); tf.keras 2.3
and 2.4 wrote the same JSON into `saved_model.pb`, on the object graph's `user_object` nodes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rnnexport.errors import SourceError, UnsupportedModelError, one_line

METADATA_FILE = "keras_metadata.pb"
SIGNATURE = "serving_default"
# The identifiers tf.keras gives a saved Functional, subclassed and Sequential model.
MODEL_IDENTIFIERS = ("_tf_keras_network", "_tf_keras_model", "_tf_keras_sequential")
LOOP_OPS = ("While", "StatelessWhile")


def has_loop(path: Path) -> bool:
    """True when the SavedModel's functions hold a functional While loop, read from the bytes
    alone (a NodeDef's op is field 2, a length-prefixed string) so that sniffing stays cheap."""
    data = (path / "saved_model.pb").read_bytes()
    return any(b"\x12" + bytes([len(op)]) + op.encode() in data for op in LOOP_OPS)


@functools.cache
def saved_metadata_class() -> Any:
    """The `SavedMetadata` message (tf.keras's `saved_metadata.proto`), built from its fields so
    that reading it needs neither tf-keras nor TensorFlow's private Keras copy."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="rnnexport_saved_metadata.proto", package="rnnexport",
                                               syntax="proto3")
    node = proto.message_type.add(name="SavedObject")
    for name, number, kind in (("node_id", 2, field.TYPE_INT32), ("node_path", 3, field.TYPE_STRING),
                               ("identifier", 4, field.TYPE_STRING), ("metadata", 5, field.TYPE_STRING)):
        node.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    saved = proto.message_type.add(name="SavedMetadata")
    saved.field.add(name="nodes", number=1, type=field.TYPE_MESSAGE, type_name=".rnnexport.SavedObject",
                    label=field.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rnnexport.SavedMetadata"))


class SavedModelContents:
    """The parsed `saved_model.pb` of a directory (one `serve` meta graph)."""

    def __init__(self, path: Path) -> None:
        from tensorflow.core.protobuf import saved_model_pb2

        self.path = path
        proto = saved_model_pb2.SavedModel()
        try:
            proto.ParseFromString((path / "saved_model.pb").read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
            raise SourceError(f"{path}: saved_model.pb is not a SavedModel ({one_line(exc, typed=False)})") from None
        graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(proto.meta_graphs)
        if not graphs:
            raise SourceError(f"{path}: the SavedModel holds no meta graph")
        self.meta_graph = graphs[0]
        self.tensorflow_version = self.meta_graph.meta_info_def.tensorflow_version or "unknown"
        self.functions = {f.signature.name: f for f in self.meta_graph.graph_def.library.function}

    @property
    def signatures(self) -> list[str]:
        return sorted(k for k in self.meta_graph.signature_def if not k.startswith("__"))

    def signature_name(self) -> str:
        names = self.signatures
        if not names:
            raise UnsupportedModelError(f"{self.path}: the SavedModel has no serving signature to run")
        return SIGNATURE if SIGNATURE in names else names[0]

    def keras_model_config(self) -> tuple[dict[str, Any] | None, str]:
        """The root model's tf.keras config, if it is a Functional or Sequential one (None for
        subclassed models and non-Keras exports), and the root's class name ('' for no Keras)."""
        root = self._root_metadata()
        if root is None:
            return None, ""
        from keras.src.legacy.saving import json_utils

        try:
            metadata = json_utils.decode(root)
        except ValueError as exc:
            raise SourceError(f"{self.path}: the Keras metadata is not JSON ({exc})") from None
        cls = metadata.get("class_name", "")
        config = metadata.get("config")
        if cls not in ("Sequential", "Functional", "Model") or not isinstance(config, dict) or "layers" not in config:
            return None, cls
        return {"class_name": cls, "config": config}, cls

    def _root_metadata(self) -> str | None:
        file = self.path / METADATA_FILE
        if file.is_file():
            saved = saved_metadata_class()()
            try:
                saved.ParseFromString(file.read_bytes())
            except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
                raise SourceError(f"{file}: not a Keras SavedMetadata proto ({one_line(exc, typed=False)})") from None
            nodes = [n for n in saved.nodes if n.node_path == "root" and n.identifier in MODEL_IDENTIFIERS]
            return nodes[0].metadata if nodes else None
        objects = self.meta_graph.object_graph_def.nodes
        if objects and objects[0].WhichOneof("kind") == "user_object":
            user = objects[0].user_object
            if user.identifier in MODEL_IDENTIFIERS and user.metadata:
                return user.metadata
        return None

    def check_safe(self, unsafe: bool) -> None:
        """Refuse, before anything is loaded, a SavedModel whose loading or serving signature would
        run an op that reaches files, the network or Python, unless `unsafe`."""
        if unsafe or not self.signatures:
            return
        from rnnexport_converters.tf1 import safety

        found = safety.saved_model_unsafe(self.meta_graph, self.signature_name())
        if found:
            op = found[0]
            raise UnsupportedModelError(
                f"{self.path}: the SavedModel's functions run {op.type} (in {op.function or op.name}), which reads or "
                "writes files, the network or runs Python; rnnexport does not run such a graph from elsewhere. If you "
                "trust the file, pass --unsafe (SourceOptions(unsafe=True) in Python)")
