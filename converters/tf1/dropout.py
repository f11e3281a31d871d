"""Dropout as TF1 graphs hold it, recognised so that the export leaves it out.

Every TF version spelled it differently; all draw `RandomUniform` noise of the data's shape and
keep an element where the draw clears a threshold made of a `keep_prob` (or rate) placeholder,
scaling the kept elements by 1/keep_prob:

- TF 1.x (and `DropoutWrapper` in cutkum): `mul(div(x, keep_prob), floor(keep_prob + u))`
- TF 1.13 to 2.x: `mul(mul(x, 1 / (1 - rate)), cast(u >= rate))`
- TF 2.4 and later: `select(u >= rate, x / (1 - rate), 0)`

With the placeholder at the value that switches dropout off (keep_prob 1, or rate 0: `gates`
finds which by running the graph) every one of them is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Ops the mask and the scale are computed with, besides the draws, the gate placeholders and the
# shapes of tensors (whose values they never read).
NOISE_OPS = {"Const", "Identity", "Enter", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "Reciprocal", "Floor",
             "Cast", "GreaterEqual", "Greater", "Less", "LessEqual", "Pack", "StridedSlice", "ConcatV2", "Fill",
             "Maximum", "Minimum"}
SIZES = {"Shape", "Size", "Rank"}
GATES = {"Placeholder", "PlaceholderWithDefault"}


@dataclass(frozen=True)
class Dropout:
    """A dropout: the tensor it applies to, the ops it consists of and the placeholders that gate it."""

    data: Any
    ops: frozenset[str]
    gates: frozenset[str]


@dataclass(frozen=True)
class _Noise:
    ops: frozenset[str]
    gates: frozenset[str]
    random: bool


def is_gate(tensor: Any) -> bool:
    """A placeholder that can gate dropout: a float scalar (or of unknown rank, as keep_prob often is),
    or a bool training flag, which models also cast into the rate (`1 - rate * cast(training)`)."""
    return (tensor.op.type in GATES and (tensor.dtype.is_floating or tensor.dtype.is_bool)
            and (tensor.shape.rank is None or tensor.shape.rank == 0))


def _noise(tensor: Any) -> _Noise | None:
    """What `tensor` is made of when only draws, gates, constants and shapes make it; else None."""
    ops: set[str] = set()
    gates: set[str] = set()
    random = False
    todo = [tensor.op]
    while todo:
        op = todo.pop()
        if op.name in ops:
            continue
        ops.add(op.name)
        if op.type in GATES:
            if not is_gate(op.outputs[0]):
                return None
            gates.add(op.outputs[0].name)
        elif op.type == "RandomUniform":
            random = True
        elif op.type not in SIZES:
            if op.type not in NOISE_OPS:
                return None
            todo.extend(t.op for t in op.inputs)
    return _Noise(frozenset(ops), frozenset(gates), random)


def _unscaled(data: Any) -> tuple[Any, frozenset[str], frozenset[str]]:
    """`data` without dropout's 1/keep_prob scale: (tensor, ops, gates)."""
    op = data.op
    if op.type not in ("Mul", "RealDiv", "Div"):
        return data, frozenset(), frozenset()
    pairs = [(op.inputs[0], op.inputs[1])]
    if op.type == "Mul":
        pairs.append((op.inputs[1], op.inputs[0]))
    for value, scale in pairs:
        found = _noise(scale)
        if found is not None and found.gates and not found.random:
            return value, found.ops | {op.name}, found.gates
    return data, frozenset(), frozenset()


def dropped(op: Any) -> Dropout | None:
    """The dropout whose last op is `op` (the multiplication by a random mask, or the selection
    by one), or None."""
    zero_ops: frozenset[str] = frozenset()
    if op.type == "Mul":
        pairs = [(op.inputs[0], op.inputs[1]), (op.inputs[1], op.inputs[0])]
    elif op.type in ("Select", "SelectV2"):
        # select(mask, scaled x, 0): the dropped elements are a constant zero.
        zero = _noise(op.inputs[2])
        if zero is None or zero.gates or zero.random:
            return None
        pairs, zero_ops = [(op.inputs[1], op.inputs[0])], zero.ops
    else:
        return None
    for value, mask in pairs:
        found = _noise(mask)
        if found is None or not found.random or _noise(value) is not None:
            continue
        data, scale_ops, scale_gates = _unscaled(value)
        return Dropout(data, found.ops | scale_ops | zero_ops | {op.name}, found.gates | scale_gates)
    return None
