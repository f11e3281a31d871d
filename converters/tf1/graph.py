"""A TF1 graph as recognition reads it: the lookups (consumers, weights, constants) and the walks
(ancestors, ops left unclaimed) that finding cells by structure needs.

Every float op between the inputs and the outputs must belong to a recognised cell, the
embedding lookup or the projection after the cells; `unclaimed` names the ones that do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from rnnexport.runner import Closable

IDENTITY_LIKE = {"Identity", "Enter", "ReadVariableOp", "Snapshot", "StopGradient"}
VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
# Ops whose value is not known before the graph runs.
VARYING_OPS = {"Placeholder", "PlaceholderWithDefault", "Merge", "Switch", "Enter", "NextIteration", "Exit",
               "TensorArrayV3", "TensorArrayReadV3", "TensorArrayGatherV3", "RandomUniform", "RandomStandardNormal"}
ACTIVATIONS = {"Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Identity": "linear"}
HEAD_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu"}
ADDS = {"Add", "AddV2", "BiasAdd"}
# Ops that move, slice, reverse, loop over or size tensors without computing new values.
PLUMBING = {
    "Identity", "Reshape", "Transpose", "ConcatV2", "Pack", "Unpack", "StridedSlice", "Squeeze", "ExpandDims",
    "Shape", "Rank", "Size", "Range", "Fill", "ZerosLike", "Const", "Placeholder", "PlaceholderWithDefault",
    "Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond", "Less", "LessEqual", "Greater", "GreaterEqual",
    "LogicalAnd", "LogicalOr", "LogicalNot", "Equal", "NotEqual", "Max", "Min", "Maximum", "Minimum", "Cast",
    "TensorArrayV3", "TensorArrayScatterV3", "TensorArrayReadV3", "TensorArrayWriteV3", "TensorArrayGatherV3",
    "TensorArraySizeV3", "Select", "SelectV2", "ReverseV2", "ReverseSequence", "Slice", "Gather", "GatherV2",
    "ResourceGather", "Assert", "All", "NoOp", "Tile", "BroadcastTo", "Floor", "FloorMod", "FloorDiv",
    "CheckNumerics", "ReadVariableOp", "VariableV2", "VarHandleOp", "Prod", "ConcatOffset",
}


class GraphView(Closable):
    """A tf.Graph with the lookups recognition needs, restricted to the ops in `scope`. Reading a
    computed weight opens a session; `close` ends it (a later read opens another)."""

    def __init__(self, graph: Any, reader: Any = None) -> None:
        """`reader` reads a checkpoint's variables; a frozen graph has none."""
        self.graph = graph
        self.reader = reader
        self._constant: dict[str, bool] = {}
        self._session: Any = None
        # Op names that compute the chosen output; consumers outside it (gradients, losses,
        # other copies of the graph) are ignored.
        self.scope: set[str] | None = None
        self.consumers: dict[str, list[Any]] = {}
        for op in graph.get_operations():
            for tensor in op.inputs:
                self.consumers.setdefault(tensor.name, []).append(op)

    def tensor(self, name: str) -> Any:
        return self.graph.get_tensor_by_name(name)

    def op(self, name: str) -> Any:
        return self.graph.get_operation_by_name(name)

    def users(self, tensor: Any, types: Iterable[str] | None = None) -> list[Any]:
        found = self.consumers.get(tensor.name, [])
        return [op for op in found if (types is None or op.type in types)
                and (self.scope is None or op.name in self.scope)]

    def through(self, tensor: Any) -> Any:
        """The tensor behind Identity-like ops."""
        while tensor.op.type in IDENTITY_LIKE and tensor.op.inputs:
            tensor = tensor.op.inputs[0]
        return tensor

    def written(self, gather: Any) -> list[Any]:
        """The values written into the TensorArray a TensorArrayGatherV3 reads (inside a loop)."""
        handle = self.through(gather.inputs[0]).op
        return [w.inputs[2] for w in self.graph.get_operations()
                if w.type == "TensorArrayWriteV3" and self.through(w.inputs[0]).op.name == handle.name]

    def weight(self, tensor: Any) -> str | None:
        """The weight a tensor reads: a variable, a frozen constant, or a float tensor computed from
        constants alone (Keras splits its GRU bias with ops). Its name, for `value`."""
        tensor = self.through(tensor)
        if tensor.op.type in VARIABLE_OPS:
            return tensor.op.name
        if not tensor.dtype.is_floating or tensor.shape.rank in (None, 0) or not self.constant(tensor):
            return None
        return tensor.op.name if tensor.op.type == "Const" else tensor.name

    def constant(self, tensor: Any) -> bool:
        """True when a tensor depends on constants alone (no input, variable or loop)."""
        todo, seen = [tensor.op], set()
        while todo:
            op = todo.pop()
            if op.name in seen or self._constant.get(op.name):
                continue
            seen.add(op.name)
            if (op.name in self._constant or op.type in VARIABLE_OPS | VARYING_OPS
                    or op._get_control_flow_context() is not None):
                self._constant[tensor.op.name] = False
                return False
            todo.extend(t.op for t in op.inputs)
        self._constant.update(dict.fromkeys(seen, True))
        return True

    def value(self, name: str) -> np.ndarray:
        """The value of a weight `weight` named."""
        if ":" in name:
            if self._session is None:
                from rnnexport.tf import tensorflow

                self._session = tensorflow().compat.v1.Session(graph=self.graph)
            return np.asarray(self._session.run(name))
        op = self.graph.get_operation_by_name(name)
        if op.type == "Const":
            from tensorflow.python.framework import tensor_util

            return tensor_util.MakeNdarray(op.get_attr("value"))
        return np.asarray(self.reader.get_tensor(name))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def const(self, tensor: Any) -> np.ndarray | None:
        op = self.through(tensor).op
        if op.type != "Const":
            return None
        from tensorflow.python.framework import tensor_util

        return tensor_util.MakeNdarray(op.get_attr("value"))

    def scalar(self, tensor: Any) -> float | None:
        value = self.const(tensor)
        return float(value) if value is not None and value.size == 1 else None


def ancestors(tensors: Iterable[Any], stop: set[str] = frozenset()) -> set[str]:
    """Names of the ops `tensors` depend on (data and loop back-edges), not crossing `stop`."""
    seen: set[str] = set()
    todo = [t.op for t in tensors]
    while todo:
        op = todo.pop()
        if op.name in seen or op.name in stop:
            continue
        seen.add(op.name)
        todo.extend(t.op for t in op.inputs)
        if op.type == "Merge":
            todo.extend(t.op for t in op.inputs)
    return seen


def unclaimed(view: GraphView, scope: set[str], claimed: set[str]) -> Iterator[Any]:
    """Ops in `scope` that compute floats and belong to nothing recognised."""
    for name in sorted(scope - claimed):
        op = view.op(name)
        if op.type in PLUMBING:
            continue
        if op.outputs and all(not t.dtype.is_floating or view.constant(t) for t in op.outputs):
            continue
        yield op
