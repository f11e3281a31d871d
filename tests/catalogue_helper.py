"""Bad inputs for the catalogue: graphs edited op by op so that running them would write a file
(`WriteFile` into `victim`), and files damaged the ways users damage them."""

from __future__ import annotations

import shutil
from pathlib import Path


def _write_file_nodes(graph_def, victim: Path, name: str) -> None:
    """Add `name` = WriteFile(victim, "pwned") to `graph_def`, unconnected."""
    from tensorflow.core.framework import node_def_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    for suffix, value in (("path", str(victim)), ("contents", "pwned")):
        const = node_def_pb2.NodeDef(name=f"{name}/{suffix}", op="Const")
        const.attr["dtype"].type = types_pb2.DT_STRING
        const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        graph_def.node.append(const)
    write = node_def_pb2.NodeDef(name=name, op="WriteFile", input=[f"{name}/path", f"{name}/contents"])
    graph_def.node.append(write)


def _depend(graph_def, node: str, on: str) -> None:
    next(n for n in graph_def.node if n.name == node).input.append(f"^{on}")


def poisoned_checkpoint(source: Path, out: Path, victim: Path, where: str) -> Path:
    """A copy of checkpoint directory `source` whose meta graph writes `victim` when `where` runs:
    `output` (the output 'y' depends on it), `restore` (the saver's restore op does) or `branch`
    (nothing the export needs does)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    shutil.copytree(source, out)
    meta_path = out / "model.ckpt.meta"
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(meta_path.read_bytes())
    _write_file_nodes(meta.graph_def, victim, "exfiltrate")
    if where == "output":
        _depend(meta.graph_def, "y", "exfiltrate")
    elif where == "restore":
        _depend(meta.graph_def, meta.saver_def.restore_op_name, "exfiltrate")
    meta_path.write_bytes(meta.SerializeToString())
    return out


def _side_effect_nodes(op: str, victim: Path) -> list:
    """The nodes of one op reaching outside the graph, built by TensorFlow itself, all named under
    'exfiltrate' (the op itself is 'exfiltrate')."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.name_scope("exfiltrate_inputs"):
        if op == "ReadFile":
            tf.io.read_file(str(victim), name="exfiltrate")
        elif op == "MatchingFiles":
            tf.io.matching_files(str(victim.parent / "*"), name="exfiltrate")
        elif op == "PrintV2":
            tf.raw_ops.PrintV2(input="pwned", output_stream=f"file://{victim}", name="exfiltrate")
        elif op == "PyFunc":
            tf.compat.v1.py_func(lambda: victim.write_text("pwned"), [], [], name="exfiltrate")
    nodes = list(graph.as_graph_def().node)
    for node in nodes:
        node.name = node.name.removeprefix("exfiltrate_inputs/")
        node.input[:] = [i.replace("exfiltrate_inputs/", "") for i in node.input]
    return nodes


def poisoned_frozen(source: Path, out: Path, victim: Path, where: str, op: str = "WriteFile") -> Path:
    """A copy of frozen graph `source` whose op `op` (WriteFile writes `victim`, the others read
    files, print to it or run Python) runs when `where` (`output`, `branch`) runs."""
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(source.read_bytes())
    if op == "WriteFile":
        _write_file_nodes(graph_def, victim, "exfiltrate")
    else:
        graph_def.node.extend(_side_effect_nodes(op, victim))
    if where == "output":
        _depend(graph_def, "y", "exfiltrate")
    out.write_bytes(graph_def.SerializeToString())
    return out


def poisoned_savedmodel(source: Path, out: Path, victim: Path) -> Path:
    """A copy of SavedModel `source` whose serving function writes `victim` before it returns."""
    from tensorflow.core.framework import node_def_pb2, types_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import tensor_util

    shutil.copytree(source, out)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((out / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0]
    output = next(iter(graph.signature_def["serving_default"].outputs.values())).name.split(":")[0]
    call = next(n for n in graph.graph_def.node if n.name == output)
    body = next(f for f in graph.graph_def.library.function if f.signature.name == call.attr["f"].func.name)
    for suffix, value in (("path", str(victim)), ("contents", "pwned")):
        const = node_def_pb2.NodeDef(name=f"exfiltrate_{suffix}", op="Const")
        const.attr["dtype"].type = types_pb2.DT_STRING
        const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        body.node_def.append(const)
    body.node_def.append(node_def_pb2.NodeDef(name="exfiltrate", op="WriteFile",
                                              input=["exfiltrate_path:output:0", "exfiltrate_contents:output:0"]))
    body.control_ret["exfiltrate"] = "exfiltrate"
    body.signature.control_output.append("exfiltrate")
    (out / "saved_model.pb").write_bytes(proto.SerializeToString())
    return out
