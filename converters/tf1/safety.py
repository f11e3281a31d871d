"""Which ops of a graph from elsewhere could reach the file system, the network or Python if
rnnexport ran it, read from the GraphDef before any session exists.

Only what a run would execute is judged: the ops the fetched tensors depend on (data and control
inputs, and every op of the functions they call), not the branches they never reach (a training
step's summaries, a saver's save function). A checkpoint's own restore is legitimate: its
`RestoreV2` ops may read the file name rnnexport feeds, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexport.errors import UnsupportedModelError

UNSAFE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc", "Print", "PrintV2",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename",
    "ImmutableConst", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "LoadAndRemapMatrix",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2", "RemoteCall", "_Send", "_Recv", "_HostSend", "_HostRecv", "Send", "Recv",
    "CollectiveReduce", "CollectiveReduceV2", "CollectiveGather", "CollectiveBcastSend", "CollectiveBcastRecv",
    "StatefulPartitionedCallWithRemote", "DecodeProtoV2", "EncodeProto",
})
# Families named by a part of their op type: readers and queues, datasets and iterators (which
# read files and run user functions), summary writers.
UNSAFE_PARTS = ("Reader", "Queue", "Dataset", "Iterator", "Summary", "Checkpoint", "PyFunc")
RESTORE_OPS = frozenset({"RestoreV2", "Restore", "RestoreSlice"})


def unsafe_type(op: str) -> bool:
    return op in UNSAFE_OPS or any(part in op for part in UNSAFE_PARTS)


@dataclass(frozen=True)
class Found:
    """An op a run would execute: its name, its type, and the function holding it ('' at top level)."""

    name: str
    type: str
    function: str = ""

    def describe(self) -> str:
        where = f" in function {self.function}" if self.function else ""
        return f"'{self.name}' ({self.type}{where})"


def _input_op(name: str) -> str:
    """The op of an input reference: `^ctrl`, `op:1` and `op` name op `op` (in a function body,
    `op:output:0` too)."""
    return name.lstrip("^").split(":")[0]


def _called(node: Any, functions: Mapping[str, Any]) -> Iterator[str]:
    if node.op in functions:
        yield node.op
    # A call's `f`, a loop's `body` and `cond`, a case's `branches`.
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        elif value.HasField("list"):
            yield from (f.name for f in value.list.func)


def executed(graph_def: Any, fetches: Iterable[str], fed: Iterable[str] = (), calls: Iterable[str] = ()
             ) -> Iterator[Found]:
    """Every op fetching `fetches` (op or tensor names) runs: their inputs back to the `fed` ops,
    and every op of each function one of them calls (or of `calls`), at any depth."""
    nodes = {node.name: node for node in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}
    stop = {_input_op(name) for name in fed}
    todo = [_input_op(name) for name in fetches]
    seen: set[str] = set()
    calls = list(calls)
    while todo:
        name = todo.pop()
        if name in seen or name in stop or name not in nodes:
            continue
        seen.add(name)
        node = nodes[name]
        yield Found(node.name, node.op)
        todo.extend(_input_op(i) for i in node.input)
        calls.extend(_called(node, functions))
    done: set[str] = set()
    while calls:
        function = calls.pop()
        if function in done or function not in functions:
            continue
        done.add(function)
        for node in functions[function].node_def:
            yield Found(node.name, node.op, function)
            calls.extend(_called(node, functions))


def unsafe(graph_def: Any, fetches: Iterable[str], fed: Iterable[str] = (), restore_from: str = "",
           calls: Iterable[str] = ()) -> list[Found]:
    """The ops a run of `fetches` would execute that reach files, the network or Python. A
    restore op whose checkpoint prefix is the fed tensor `restore_from` reads the checkpoint
    rnnexport names, and is allowed."""
    nodes = {node.name: node for node in graph_def.node}
    allowed_prefix = _input_op(restore_from) if restore_from else None
    found = []
    for op in executed(graph_def, fetches, fed, calls):
        if not unsafe_type(op.type):
            continue
        if (op.type in RESTORE_OPS and not op.function and allowed_prefix is not None
                and _reads_from(nodes, nodes[op.name].input[0], allowed_prefix)):
            continue
        found.append(op)
    return found


def _reads_from(nodes: Mapping[str, Any], name: str, prefix: str) -> bool:
    """True when input `name` is op `prefix`'s value, through Identity ops only."""
    op = _input_op(name)
    while op != prefix and op in nodes and nodes[op].op == "Identity" and nodes[op].input:
        op = _input_op(nodes[op].input[0])
    return op == prefix


def check(path: Path | str, graph_def: Any, fetches: Iterable[str], options_unsafe: bool, what: str,
          fed: Iterable[str] = (), restore_from: str = "") -> None:
    """Refuse a graph whose run of `fetches` would execute an unsafe op, naming the first one,
    unless `--unsafe`."""
    found = [] if options_unsafe else unsafe(graph_def, fetches, fed, restore_from)
    if not found:
        return
    others = f" (and {len(found) - 1} more such op(s))" if len(found) > 1 else ""
    raise UnsupportedModelError(
        f"{path}: {what} runs op {found[0].describe()}{others}, which can reach the file system, the network or "
        "Python; rnnexport does not run such a graph from elsewhere. If you trust the file, pass --unsafe "
        "(SourceOptions(unsafe=True) in Python)")


# Children of a restored resource whose functions TensorFlow's loader calls while loading.
LOADER_CALLED = ("_create_resource", "_initialize", "_destroy_resource")
# Collections of a TF1 SavedModel whose ops its loader runs after restoring the variables.
INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "table_initializer")


def saved_model_unsafe(meta_graph: Any, signature: str) -> list[Found]:
    """The unsafe ops loading a SavedModel's meta graph and running `signature` would execute.

    A TF2 SavedModel is restored by the loader's own ops, and runs the functions of its
    resources; a TF1 one (no object graph) runs its saver's restore, then its init ops."""
    graph_def = meta_graph.graph_def
    served = meta_graph.signature_def[signature]
    fetches = [t.name for t in served.outputs.values()]
    # What the signature's inputs are computed from in training (a dataset iterator) is fed, not run.
    fed = [t.name for t in served.inputs.values()]
    init = meta_graph.signature_def.get("__saved_model_init_op")
    if init is not None:
        fetches += [t.name for t in init.outputs.values()]
    for key in INIT_COLLECTIONS:
        if key in meta_graph.collection_def:
            fetches += list(meta_graph.collection_def[key].node_list.value)
    objects = meta_graph.object_graph_def.nodes
    if not objects:
        saver = meta_graph.saver_def
        if saver.restore_op_name:
            fetches.append(saver.restore_op_name)
        return unsafe(graph_def, fetches, [*fed, saver.filename_tensor_name], saver.filename_tensor_name)
    calls = []
    for node in objects:
        for child in node.children:
            if child.local_name in LOADER_CALLED:
                called = objects[child.node_id]
                kind = called.WhichOneof("kind")
                if kind == "function":
                    calls += list(called.function.concrete_functions)
                elif kind == "bare_concrete_function":
                    calls.append(called.bare_concrete_function.concrete_function_name)
    return unsafe(graph_def, fetches, fed, calls=calls)
