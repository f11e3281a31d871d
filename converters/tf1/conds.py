"""`tf.cond` on a training flag, as `tf.layers.dropout(x, rate, training=is_training)` builds it:
a `Merge` of two branches that `Switch` ops open on a bool scalar placeholder (`is_training`,
`training`, often a `PlaceholderWithDefault(False)`). Inference feeds the flag False, so the
merge passes on its false branch and the true one (the dropout) never runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnexport_converters.tf1.graph import IDENTITY_LIKE, VARIABLE_OPS

# Ops a branch may not reach without passing a Switch: they would be inputs from outside the
# cond that it does not switch.
OUTSIDE = {"Placeholder", "PlaceholderWithDefault", "Merge", "Enter", "NextIteration", *VARIABLE_OPS}


@dataclass(frozen=True)
class TrainingCond:
    """A cond on a training flag: the tensor its false branch gives, the ops of both branches
    and of the merge (none of them computes at inference), and the flag placeholder."""

    inference: Any
    ops: frozenset[str]
    flag: str


def _flag(pred: Any) -> str | None:
    """The bool scalar placeholder a Switch's predicate is, behind identities."""
    while pred.op.type in IDENTITY_LIKE and pred.op.inputs:
        pred = pred.op.inputs[0]
    if pred.op.type in ("Placeholder", "PlaceholderWithDefault") and pred.dtype.is_bool and pred.shape.rank == 0:
        return pred.name
    return None


def _branch(tensor: Any) -> tuple[int, frozenset[str], str] | None:
    """(which output of its Switches a branch reads, its ops, the flag) for the branch ending at
    `tensor`, or None when it is no branch of a cond on a flag."""
    ops: set[str] = set()
    taken: set[tuple[int, str]] = set()
    todo = [tensor]
    while todo:
        value = todo.pop()
        op = value.op
        if op.type == "Switch":
            flag = _flag(op.inputs[1])
            if flag is None:
                return None
            ops.add(op.name)
            taken.add((value.value_index, flag))
            continue
        if op.name in ops:
            continue
        if op.type in OUTSIDE:
            return None
        ops.add(op.name)
        todo.extend(op.inputs)
    if len(taken) != 1:
        return None
    (index, flag), = taken
    return index, frozenset(ops), flag


def training_cond(merge: Any) -> TrainingCond | None:
    """The cond `merge` closes when it is one on a training flag, else None (a loop's merge, a cond
    on a computed predicate)."""
    if merge.type != "Merge" or len(merge.inputs) != 2:
        return None
    branches = [_branch(t) for t in merge.inputs]
    if any(b is None for b in branches) or {b[0] for b in branches} != {0, 1} or branches[0][2] != branches[1][2]:
        return None
    inference = next(t for t, b in zip(merge.inputs, branches) if b[0] == 0)
    return TrainingCond(inference, branches[0][1] | branches[1][1] | {merge.name}, branches[0][2])
