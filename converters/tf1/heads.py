"""The head after a TF1 graph's last recurrent layer: dense layers (a MatMul by a weight, maybe a
bias, maybe an activation), one after another, read by walking back from the output to the
cells' outputs.

Every path from the output back to a cell must apply the same head: `static_rnn`'s list of
steps may be projected step by step (the same MatMul and bias on every step, then `tf.stack`),
or stacked first and projected once (a reshape to [batch * time, units]); both read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport_converters.tf1.graph import ADDS, HEAD_ACTIVATIONS, VARIABLE_OPS, GraphView
from rnnexport.errors import UnsupportedModelError

if TYPE_CHECKING:
    from rnnexport_converters.tf1.structure import Layer, Tracer

Head = list[tuple[str, Any]]
# Ops that carry the cells' outputs to the head without computing: they move, stack, slice,
# reverse or loop over tensors, or size and fill the zero state a loop starts from.
CARRIERS = {"Identity", "Reshape", "Transpose", "ConcatV2", "Pack", "StridedSlice", "Squeeze", "ExpandDims", "Exit",
            "Switch", "Merge", "Enter", "NextIteration", "ReverseV2", "ReverseSequence", "Unpack", "Shape", "Fill",
            "ZerosLike", "Cast", "Range", "Prod", "GatherV2", "ReadVariableOp"}
TERMINALS = {"Placeholder", "Const", *VARIABLE_OPS}


@dataclass(frozen=True)
class _Branch:
    """What one path back from a tensor applies (output side first) and the cells it reaches."""

    head: tuple[tuple[str, Any], ...]
    reached: frozenset[str]


def _same(a: tuple[tuple[str, Any], ...], b: tuple[tuple[str, Any], ...]) -> bool:
    if [k for k, _ in a] != [k for k, _ in b]:
        return False
    return all(x is y or (np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y)
               for (_, x), (_, y) in zip(a, b))


class _Walk:
    def __init__(self, view: GraphView, tracer: Tracer) -> None:
        self.view = view
        self.tracer = tracer
        self.ops: set[str] = set()
        self.memo: dict[str, _Branch | None] = {}
        # Projection MatMuls in the order walked: the last is the nearest to the cells.
        self.matmuls: list[str] = []

    def branch(self, tensor: Any) -> _Branch | None:
        """The head between the cells and `tensor`; None where no cell output reaches it."""
        if tensor.name in self.memo:
            return self.memo[tensor.name]
        # A loop's back edge leads here again: that path adds nothing new.
        self.memo[tensor.name] = None
        self.memo[tensor.name] = found = self._branch(tensor)
        return found

    def _branch(self, tensor: Any) -> _Branch | None:
        view = self.view
        if tensor.name in self.tracer.step_of:
            return _Branch((), frozenset({self.tracer.step_of[tensor.name][0].key}))
        op = tensor.op
        if not tensor.dtype.is_floating or op.type in TERMINALS or view.weight(tensor):
            return None
        entry, inputs = self._applied(op)
        self.ops.add(op.name)
        branches = [b for b in (self.branch(t) for t in inputs) if b is not None]
        if not branches:
            return None
        first = branches[0]
        for other in branches[1:]:
            if not _same(other.head, first.head):
                raise UnsupportedModelError(f"op '{op.name}' ({op.type}) joins outputs of the recurrent layers that "
                                            "went through different projections; rnnexport places one projection "
                                            "on every step")
        reached = frozenset().union(*(b.reached for b in branches))
        return _Branch(((entry,) if entry else ()) + first.head, reached)

    def _applied(self, op: Any) -> tuple[tuple[str, Any] | None, list[Any]]:
        """What `op` applies (None when it only carries values) and the inputs it reads."""
        view = self.view
        if op.type in HEAD_ACTIVATIONS:
            return ("activation", HEAD_ACTIVATIONS[op.type]), [op.inputs[0]]
        if op.type in ADDS and any(view.weight(t) for t in op.inputs):
            variable = next(view.weight(t) for t in op.inputs if view.weight(t))
            rest = [t for t in op.inputs if not view.weight(t)]
            bias = view.value(variable)
            if bias.ndim == 0 or bias.size != bias.shape[-1]:
                raise UnsupportedModelError(f"op '{op.name}' adds a constant of shape {list(bias.shape)} after the "
                                            "recurrent layers; rnnexport places a bias (one value per unit) there")
            # A bias held as [1, units] broadcasts as [units] does.
            return ("bias", bias.reshape(-1)), rest
        if op.type == "MatMul" and view.weight(op.inputs[1]):
            if op.get_attr("transpose_a") or op.get_attr("transpose_b"):
                raise UnsupportedModelError(f"op '{op.name}': a transposed projection MatMul is not supported")
            self.matmuls.append(op.name)
            return ("matmul", view.value(view.weight(op.inputs[1]))), [op.inputs[0]]
        carried = self.tracer.carried(op)
        if carried is not None:
            return None, carried
        if op.type == "TensorArrayGatherV3":
            return None, view.written(op)
        if op.type in ("Select", "SelectV2"):
            return None, [op.inputs[2]]
        if op.type in CARRIERS:
            return None, list(op.inputs)
        raise UnsupportedModelError(
            f"op '{op.name}' ({op.type}) lies between the last recurrent layer and the output; rnnexport places "
            "dense layers (MatMul, bias add, then Softmax/Sigmoid/Tanh/Relu) there")


def blocks(head: Head) -> list[tuple[np.ndarray | None, np.ndarray | None, str | None]]:
    """The head as dense layers (kernel, bias, activation); a lone activation has no kernel."""
    found: list[tuple[np.ndarray | None, np.ndarray | None, str | None]] = []
    for kind, value in head:
        if kind == "matmul":
            found.append((value, None, None))
        elif kind == "bias":
            kernel, _, _ = found[-1]
            found[-1] = (kernel, value, None)
        else:
            # An activation after another one (cutkum: sigmoid, then softmax) is a layer of its own.
            if not found or found[-1][2] is not None:
                found.append((None, None, None))
            kernel, bias, _ = found[-1]
            found[-1] = (kernel, bias, value)
    return found


def _placeable(order: list[str]) -> bool:
    """True for [activation] alone, or dense layers: matmul, maybe bias, maybe activations, again."""
    if order == ["activation"]:
        return True
    at = 0
    while at < len(order):
        if order[at] != "matmul":
            return False
        at += 1
        for optional in ("bias", "activation"):
            if at < len(order) and order[at] == optional:
                at += 1
        while at < len(order) and order[at] == "activation":
            at += 1
    return True


def head_of(view: GraphView, output: Any, tracer: Tracer, last: Layer) -> tuple[Head, set[str]]:
    """The head after the last layer: ("matmul", W), ("bias", b), ("activation", name), in the
    order applied, and the ops it consists of."""
    walk = _Walk(view, tracer)
    found = walk.branch(output)
    wanted = {c.key for c in last.cells}
    if found is None or found.reached != wanted:
        raise UnsupportedModelError("the output does not read the last recurrent layer "
                                    f"({', '.join(sorted(wanted))}) alone")
    head = list(reversed(found.head))
    order = [k for k, _ in head]
    if not _placeable(order):
        raise UnsupportedModelError(f"the projection after the recurrent layers applies {', '.join(order)}; "
                                    "rnnexport places dense layers there: MatMul, then a bias, then an activation")
    if order and order[0] == "matmul" and head[0][1].shape[0] != last.output_size:
        raise UnsupportedModelError(_folded(view, walk, head[0][1].shape[0], last.output_size))
    return head, walk.ops


def _folded(view: GraphView, walk: _Walk, rows: int, width: int) -> str:
    """The refusal of a projection whose kernel does not take one step's features; where a Reshape
    folds time into the features (a Flatten), it ties the graph to that many steps."""
    matmul = walk.matmuls[-1]
    fold = next((n for n in sorted(walk.ops) if view.op(n).type == "Reshape"
                 and view.op(n).outputs[0].shape.as_list()[-1:] == [rows]), None)
    if rows % width or fold is None:
        return (f"op '{matmul}' (MatMul) reads {rows} features per row where the last recurrent layer returns {width} "
                "per step; rnnexport places dense layers on each step there")
    return (f"op '{fold}' (Reshape) folds the last recurrent layer's {rows // width} steps of {width} features into "
            f"{rows} per row, which op '{matmul}' (MatMul) reads: the graph runs at length {rows // width} only, and "
            "rnnexport exports models that accept any length")
