"""Pieces of the steps Keras traces on the TensorFlow backend (Keras 2.x's `K.rnn`, tf.keras, Keras
3): weights read whole or sliced by gate (Keras 2.0-2.3 slice once before the loop, tf.keras slices
inside the loop body), Keras 2's hard sigmoid gate, and which of two operands is the state.

A slice inside a `while` body cannot be fetched from the graph, so the value of every slice of a
weight is cut from that weight here, with the slice's own constant parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnexport_converters.tf1.graph import ADDS, GraphView

SLICES = {"Split": 1, "SplitV": 0, "StridedSlice": 0, "Unpack": 0}  # the input each slicing op cuts
# What a Keras initial state is made of: zeros, or Keras 2's
# tile(expand_dims(sum(zeros_like(inputs), axis=(1, 2))), [1, units]).
ZEROS = {"Fill", "ZerosLike", "Const"}
ZERO_SHAPING = {"Tile", "ExpandDims", "Sum", "Reshape", "Identity", "Enter"}
HARD_SIGMOID = "hard_sigmoid_keras2"  # the RecurrentModel's name for clip(0.2 x + 0.5, 0, 1)


def weight(view: GraphView, tensor: Any, ops: set[str] | None = None) -> str | None:
    """The name of the weight `tensor` reads, whole or a slice of one (its slicing op joins `ops`)."""
    name = view.weight(tensor)
    if name is not None:
        return name
    sliced = view.through(tensor)
    op = sliced.op
    if op.type not in SLICES or weight(view, op.inputs[SLICES[op.type]], ops) is None:
        return None
    if any(view.const(t) is None for i, t in enumerate(op.inputs) if i != SLICES[op.type]):
        return None
    if ops is not None:
        ops.add(op.name)
    return sliced.name


def value(view: GraphView, name: str) -> np.ndarray:
    """The value of a weight `weight` named, cut from the weight it slices where it is a slice."""
    if ":" not in name:
        return view.value(name)
    tensor = view.tensor(name)
    op = tensor.op
    if op.type not in SLICES or weight(view, op.inputs[SLICES[op.type]]) is None:
        return view.value(name)
    whole = value(view, weight(view, op.inputs[SLICES[op.type]]))
    if op.type == "Split":
        return np.split(whole, op.get_attr("num_split"), axis=int(view.const(op.inputs[0])))[tensor.value_index]
    if op.type == "SplitV":
        cuts = np.cumsum(view.const(op.inputs[1]))[:-1]
        return np.split(whole, cuts, axis=int(view.const(op.inputs[2])))[tensor.value_index]
    if op.type == "Unpack":  # tf.keras's GRU (reset_after=True) unstacks its [2, 3 * units] bias
        return np.take(whole, tensor.value_index, axis=op.get_attr("axis"))
    return whole[_strided(view, op)]


def _strided(view: GraphView, op: Any) -> tuple[Any, ...]:
    """A StridedSlice's parameters as a numpy index."""
    begin, end, strides = (view.const(t) for t in op.inputs[1:])
    index: list[Any] = []
    for axis in range(len(begin)):
        if op.get_attr("shrink_axis_mask") >> axis & 1:
            index.append(int(begin[axis]))
            continue
        start = None if op.get_attr("begin_mask") >> axis & 1 else int(begin[axis])
        stop = None if op.get_attr("end_mask") >> axis & 1 else int(end[axis])
        index.append(slice(start, stop, int(strides[axis])))
    return tuple(index)


def offset(view: GraphView, tensor: Any) -> int | None:
    """The first column along the last axis that a slice of a gate product takes, else None."""
    op = tensor.op
    if op.type == "Split":
        return tensor.value_index * int(tensor.shape[-1]) if tensor.shape[-1] is not None else None
    if op.type == "SplitV":
        return int(np.sum(view.const(op.inputs[1])[:tensor.value_index]))
    if op.type == "StridedSlice" and view.const(op.inputs[1]) is not None:
        begin = view.const(op.inputs[1])
        last = len(begin) - 1
        return 0 if op.get_attr("begin_mask") >> last & 1 else int(begin[last])
    return None


def sliced_source(tensor: Any) -> Any:
    """The tensor a slice cuts."""
    return tensor.op.inputs[SLICES[tensor.op.type]]


def carried(view: GraphView, tensor: Any) -> Any | None:
    """For a loop variable read in a `while` body (Identity of Switch of Merge), the tensor that
    the body passes to the next iteration; None for any other tensor."""
    while tensor.op.type == "Identity":
        tensor = tensor.op.inputs[0]
    if tensor.op.type != "Switch" or tensor.op.inputs[0].op.type != "Merge":
        return None
    following = [t for t in tensor.op.inputs[0].op.inputs if t.op.type == "NextIteration"]
    return view.through(following[0].op.inputs[0]) if following else None


def zero(tensor: Any) -> bool:
    """True for an initial state Keras builds from zeros."""
    return _zeros(tensor) is not None


def _zeros(tensor: Any) -> set[str] | None:
    """The ops that build `tensor` from zeros, else None."""
    todo, ops = [tensor], set()
    while todo:
        op = todo.pop().op
        ops.add(op.name)
        if op.type in ZEROS:
            continue
        if op.type not in ZERO_SHAPING:
            return None
        todo.append(op.inputs[0])
    return ops


def initial_ops(states: Sequence[Any]) -> set[str]:
    """The ops that build the zero initial states a step starts from (behind its loop variables),
    which belong to the cell."""
    found: set[str] = set()
    for tensor in states:
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        if tensor.op.type == "Switch" and tensor.op.inputs[0].op.type == "Merge":
            tensor = next((t for t in tensor.op.inputs[0].op.inputs if t.op.type == "Enter"), tensor)
        found |= _zeros(tensor) or set()
    return found


def gate(view: GraphView, op: Any, ops: set[str]) -> tuple[Any, str] | None:
    """(pre-activation, recurrent activation) of a gate that `op` outputs: a Sigmoid, or Keras 2's
    hard sigmoid `clip(x * 0.2 + 0.5, 0, 1)` (Maximum of Minimum, or ClipByValue); else None."""
    if op.type == "Sigmoid":
        ops.add(op.name)
        return op.inputs[0], "sigmoid"
    chain = [op]
    if op.type == "Maximum" and view.scalar(op.inputs[1]) == 0.0 and op.inputs[0].op.type == "Minimum":
        low = op.inputs[0].op
        if view.scalar(low.inputs[1]) != 1.0:
            return None
        chain.append(low)
        shifted = low.inputs[0]
    elif op.type == "ClipByValue" and view.scalar(op.inputs[1]) == 0.0 and view.scalar(op.inputs[2]) == 1.0:
        shifted = op.inputs[0]
    else:
        return None
    add = shifted.op
    if add.type not in ADDS or view.scalar(add.inputs[1]) != 0.5 or add.inputs[0].op.type != "Mul":
        return None
    scale = add.inputs[0].op
    if view.scalar(scale.inputs[1]) is None or abs(view.scalar(scale.inputs[1]) - 0.2) > 1e-7:
        return None
    ops.update(o.name for o in (*chain, add, scale))
    return scale.inputs[0], HARD_SIGMOID


def keras_activation(name: str) -> Any:
    """What a Keras 3 layer takes for an activation the graph computes."""
    if name == HARD_SIGMOID:
        from rnnexport_converters.keras.layers import legacy_hard_sigmoid

        return legacy_hard_sigmoid
    return name
