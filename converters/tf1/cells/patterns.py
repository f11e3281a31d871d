"""Pieces of graph that several cell patterns share: a bias add, a clip, a gate, an activation,
the kernel MatMul every TF1 cell class starts with, and the sums of MatMuls Keras traces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import traced
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView
from rnnexport.errors import UnsupportedModelError


def only(ops: list[Any], what: str, near: Any) -> Any:
    if len(ops) != 1:
        raise UnsupportedModelError(f"could not read the {what} after op '{near.name}' ({near.type})")
    return ops[0]


def other(op: Any, tensor: Any) -> Any:
    """The other input of a binary op."""
    a, b = op.inputs[0], op.inputs[1]
    return b if a.name == tensor.name else a


def bias_after(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, str | None]:
    users = [u for u in view.users(tensor, ADDS) if view.weight(other(u, tensor)) is not None]
    if len(users) != 1:
        return tensor, None
    ops.add(users[0].name)
    return users[0].outputs[0], view.weight(other(users[0], tensor))


def clip_after(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, float | None]:
    """A `clip_by_value(t, -v, v)` after `tensor` (Minimum then Maximum, or ClipByValue)."""
    for user in view.users(tensor, {"ClipByValue"}):
        ops.add(user.name)
        return user.outputs[0], view.scalar(user.inputs[2])
    for user in view.users(tensor, {"Minimum"}):
        high = view.scalar(other(user, tensor))
        after = view.users(user.outputs[0], {"Maximum"})
        if high is not None and len(after) == 1 and view.scalar(other(after[0], user.outputs[0])) == -high:
            ops.update({user.name, after[0].name})
            return after[0].outputs[0], high
    return tensor, None


def gate(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, float, str | None, Any]:
    """Follow a gate pre-activation through constant and peephole adds to its Sigmoid.

    Returns the sigmoid op, the constant added (the forget bias), the peephole variable and the
    state tensor it multiplies."""
    constant, peephole, state = 0.0, None, None
    while True:
        users = view.users(tensor)
        sigmoid = [u for u in users if u.type == "Sigmoid"]
        if sigmoid:
            ops.add(sigmoid[0].name)
            return sigmoid[0], constant, peephole, state
        add = only([u for u in users if u.type in ADDS], "gate", tensor.op)
        term = other(add, tensor)
        value = view.scalar(term)
        if value is not None:
            constant += value
        elif term.op.type == "Mul":
            weight = [t for t in term.op.inputs if view.weight(t)]
            if not weight:
                raise UnsupportedModelError(f"op '{term.op.name}' adds an unknown term to an LSTM gate")
            peephole = view.weight(weight[0])
            state = other(term.op, weight[0])
            ops.add(term.op.name)
        else:
            raise UnsupportedModelError(f"op '{add.name}' adds an unknown term ({term.op.type}) to an LSTM gate")
        ops.add(add.name)
        tensor = add.outputs[0]


def activation(op: Any) -> str:
    if op.type not in ACTIVATIONS:
        raise UnsupportedModelError(f"op '{op.name}': activation {op.type} is not supported in TF1 cells "
                                    f"(supported: {', '.join(sorted(ACTIVATIONS))})")
    return ACTIVATIONS[op.type]


# -- TF1 cell classes: every gate from one MatMul of concat([x, h]) ---------------------------------


@dataclass(frozen=True)
class KernelMatMul:
    """How every TF1 cell class starts: `concat` of (x, h) times `kernel`, then a `bias` add whose
    result, `gates`, holds every gate's pre-activation."""

    kernel: str
    concat: Any
    gates: Any
    bias: str | None
    ops: frozenset[str]


def kernel_matmul(view: GraphView, op: Any) -> KernelMatMul | None:
    """The start of a TF1 cell step at MatMul `op`, else None."""
    if op.type != "MatMul":
        return None
    kernel = view.weight(op.inputs[1])
    concat = op.inputs[0].op
    if kernel is None or concat.type != "ConcatV2" or len(concat.inputs) != 3:
        return None
    ops = {op.name, concat.name}
    gates, bias = bias_after(view, op.outputs[0], ops)
    return KernelMatMul(kernel, concat, gates, bias, frozenset(ops))


# -- Keras 3 cells, as its TensorFlow backend traces them (x.W and h.U as separate MatMuls) ----


def terms(view: GraphView, tensor: Any, ops: set[str]) -> tuple[list[Any], list[str]] | None:
    """The MatMuls by a weight and the weights that are added up to make `tensor`, else None.
    Weights may be slices of one (`traced.weight`)."""
    matmuls, biases, todo, seen = [], [], [tensor], set()
    while todo:
        t = todo.pop()
        op = t.op
        bias = traced.weight(view, t, seen)
        if bias:
            biases.append(bias)
        elif op.type in ADDS:
            seen.add(op.name)
            todo.extend(op.inputs)
        elif (op.type == "MatMul" and traced.weight(view, op.inputs[1], seen) and not op.get_attr("transpose_a")
              and not op.get_attr("transpose_b")):
            seen.add(op.name)
            matmuls.append(op)
        else:
            return None
    ops |= seen
    return matmuls, biases


class Ambiguous(Exception):
    """Raised when a step's two MatMuls cannot be told apart yet; retried with the recurrent
    kernels other steps revealed."""


def input_and_recurrent(view: GraphView, matmuls: list[Any], units: int, known: list[str]) -> tuple[Any, Any]:
    """(input MatMul, recurrent MatMul). Inside a loop the recurrent one reads a loop variable
    (the input is read from a TensorArray). The recurrent weight is [units, k * units]; when both
    are, the one multiplying a zero state (the first step) or a recurrent kernel another step
    revealed is."""
    looped = [m for m in matmuls if traced.carried(view, m.inputs[0]) is not None]
    square = [m for m in matmuls if m.inputs[1].shape[0] == units]
    zero = [m for m in matmuls if traced.zero(m.inputs[0])]
    values = [traced.value(view, k) for k in known]
    seen = [m for m in matmuls if traced.weight(view, m.inputs[1]) in known
            or any(v.shape == m.inputs[1].shape
                   and np.array_equal(v, traced.value(view, traced.weight(view, m.inputs[1]))) for v in values)]
    for found in (looped, square, zero, seen):
        if len(found) == 1:
            return (matmuls[1], matmuls[0]) if found[0] is matmuls[0] else (matmuls[0], matmuls[1])
    raise Ambiguous()
