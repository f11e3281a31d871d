"""Recognised steps linked into cells: each step reads the state the step before it wrote, and
the steps of one cell must be one cell applied again and again (same pattern, settings and
weight values) before they are rolled back up into one loop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from rnnexport_converters.tf1 import cells as tf1_cells
from rnnexport_converters.tf1.cells import Ambiguous, Cell, CellMatch, Step
from rnnexport_converters.tf1.graph import GraphView
from rnnexport.errors import UnsupportedModelError


def find_cells(view: GraphView, scope: set[str]) -> list[Cell]:
    """Every cell whose steps lie in `scope` (op names), its steps in time order."""
    recognised: list[CellMatch] = []
    ambiguous = []
    for name in sorted(scope):
        op = view.op(name)
        try:
            found = tf1_cells.match(view, op)
        except Ambiguous:
            ambiguous.append(op)
            continue
        if found is not None:
            recognised.append(found)
    known = sorted({kernel for r in recognised if (kernel := r.revealed_recurrent_kernel())})
    for op in ambiguous:
        try:
            found = tf1_cells.match(view, op, known)
        except Ambiguous:
            raise UnsupportedModelError(f"op '{op.name}': cannot tell which of its two MatMuls reads the cell's "
                                        "state") from None
        if found is not None:
            recognised.append(found)
    cells, keys = [], set()
    for chain in _chains(view, recognised):
        _check_repetition(view, chain)
        key = chain[0].kernel
        while key in keys:
            key += "'"
        keys.add(key)
        steps = [replace(r.step, ops=r.step.ops | {o for n in r.step.state_in for o in _slicing(view, n)})
                 for r in chain]
        if len(steps) > 1:
            last = steps[-1]
            steps[-1] = replace(last, state_out=tuple(_copied_through(view, name) for name in last.state_out))
        cells.append(chain[0].cell(view, key, steps))
    return cells


def _previous(view: GraphView, name: str) -> str:
    """The state tensor a step reads, behind identities, sequence_length's copy-through and the
    slicing of a concatenated state."""
    tensor = view.tensor(name)
    while True:
        tensor = _unconcatenated(view, tensor)
        if tensor.op.type not in ("Select", "SelectV2"):
            return tensor.name
        tensor = tensor.op.inputs[2]


def _sliced(view: GraphView, tensor: Any) -> tuple[Any, int, int | None] | None:
    """(the tensor, where along its last axis the slice starts, its width) when `tensor` is a Split
    or Slice of another along the last axis: a cell with state_is_tuple=False splits c and h out of
    one state, and MultiRNNCell(state_is_tuple=False) slices each layer's state out of the stack's."""
    op = tensor.op
    if op.type == "Split" and view.scalar(op.inputs[0]) in (1, -1):
        width = tensor.shape[-1] if tensor.shape.rank else None
        return (op.inputs[1], tensor.value_index * width, width) if width is not None else None
    if op.type == "Slice":
        begin, size = view.const(op.inputs[1]), view.const(op.inputs[2])
        if begin is not None and size is not None and len(begin) == 2 and begin[0] == 0 and size[0] == -1:
            return op.inputs[0], int(begin[1]), int(size[1])
    return None


def _unconcatenated(view: GraphView, tensor: Any) -> Any:
    """`tensor` behind identities; a slice of a concatenation, the part concatenated there."""
    tensor = view.through(tensor)
    sliced = _sliced(view, tensor)
    if sliced is None:
        return tensor
    whole, start, width = sliced
    whole = _unconcatenated(view, whole)
    if whole.op.type == "ConcatV2" and view.scalar(whole.op.inputs[-1]) in (1, -1):
        offset = 0
        for part in whole.op.inputs[:-1]:
            if part.shape.rank is None or part.shape[-1] is None:
                break
            if offset == start and part.shape[-1] == width:
                return _unconcatenated(view, part)
            offset += part.shape[-1]
    return tensor


def _slicing(view: GraphView, name: str) -> set[str]:
    """The Split and Slice ops a step's state passes through on its way in (see `_sliced`)."""
    ops, tensor = set(), view.through(view.tensor(name))
    while (sliced := _sliced(view, tensor)) is not None:
        ops.add(tensor.op.name)
        tensor = view.through(sliced[0])
    return ops


def _copied_through(view: GraphView, name: str) -> str:
    """A final state after sequence_length's copy-through (`select(done, state, new_state)`)."""
    selects = [u for u in view.consumers.get(name, []) if u.type in ("Select", "SelectV2") and u.inputs[2].name == name]
    return selects[0].outputs[0].name if len(selects) == 1 else name


def _chains(view: GraphView, recognised: list[CellMatch]) -> list[list[CellMatch]]:
    """Steps linked into cells: each step reads the state the step before it wrote."""
    by_state = {r.step.state_out[-1]: r for r in recognised}
    following: dict[str, CellMatch] = {}
    heads = []
    for r in recognised:
        previous = by_state.get(_previous(view, r.step.state_in[-1]))
        if previous is None:
            heads.append(r)
            continue
        if previous.step.output in following:
            raise UnsupportedModelError(f"two steps continue the state of op '{previous.step.output}'; the "
                                        "unrolled steps do not form one chain per cell")
        following[previous.step.output] = r
    chains = []
    for head in heads:
        chain = [head]
        while chain[-1].step.output in following:
            chain.append(following[chain[-1].step.output])
        chains.append(chain)
    if sum(len(c) for c in chains) != len(recognised):
        raise UnsupportedModelError("the unrolled steps of a cell do not form one chain")
    return chains


def _first_reader(view: GraphView, step: Step, weight: str) -> str:
    """The op of a step that reads `weight`, to name it."""
    for name in sorted(step.ops):
        if any(view.weight(t) == weight for t in view.op(name).inputs if t.dtype.is_floating):
            return name
    return step.output


def _check_repetition(view: GraphView, chain: list[CellMatch]) -> None:
    """Refuse a chain whose steps are not one cell applied again and again."""
    first = chain[0]
    weights, settings = first.weights(), first.hyperparameters()
    for index, r in enumerate(chain[1:], start=1):
        if r.hyperparameters() != settings:
            changed = next(k for k in settings if r.hyperparameters().get(k) != settings[k])
            raise UnsupportedModelError(
                f"step {index} of the cell whose step 0 outputs '{first.step.output}' is not a repetition of step 0: "
                f"its {changed} is {r.hyperparameters().get(changed)!r}, not {settings[changed]!r} "
                f"(op '{r.step.output}')")
        theirs = r.weights()
        for role, name in weights.items():
            other = theirs.get(role)
            if other == name:
                continue
            op = _first_reader(view, r.step, other) if other else r.step.output
            if other is None or view.value(other).shape != view.value(name).shape:
                raise UnsupportedModelError(
                    f"step {index} breaks the pattern of the cell whose step 0 outputs '{first.step.output}': op "
                    f"'{op}' reads no {role} like step 0's '{name}'")
            difference = float(np.max(np.abs(view.value(other) - view.value(name))))
            if difference:
                raise UnsupportedModelError(
                    f"step {index} breaks the pattern of the cell whose step 0 outputs '{first.step.output}': op "
                    f"'{op}' reads {role} '{other}', which differs from step 0's '{name}' by up to {difference:.3g}; "
                    "the steps compute different functions, so rnnexport will not re-roll them into one loop")


def state_tensors(view: GraphView, cell: Cell) -> tuple[list[str], list[str | None]]:
    """(initial state tensors to feed, final state tensors to fetch) of a cell; a final state that
    freezing pruned from a loop is None. A loop that carries states concatenated (state_is_tuple=
    False) names the whole concatenation for each; `state_columns` says where each one lies."""
    if not cell.looped:
        return list(cell.steps[0].state_in), list(cell.steps[-1].state_out)
    initials, finals = [], []
    for name in cell.steps[0].state_in:
        switch, _ = _loop_state(view, name)
        merge = switch.inputs[0].op
        initials.append(view.through(merge.inputs[0]).name)
        # The final state is rarely part of the output's graph: look beyond its scope.
        exits = [u for u in view.consumers.get(switch.outputs[0].name, []) if u.type == "Exit"]
        if len(exits) > 1:
            raise UnsupportedModelError(f"state '{name}' leaves its loop more than once")
        finals.append(exits[0].outputs[0].name if exits else None)
    return initials, finals


def state_columns(view: GraphView, cell: Cell) -> list[tuple[int, int] | None]:
    """Where along the last axis each state lies in the tensor `state_tensors` names for it: None
    for the whole tensor, (start, stop) for one state of a concatenation carried by a loop."""
    if not cell.looped:
        return [None] * len(cell.steps[0].state_in)
    return [_loop_state(view, name)[1] for name in cell.steps[0].state_in]


def _loop_state(view: GraphView, name: str) -> tuple[Any, tuple[int, int] | None]:
    """The loop's Switch that carries the state a step reads as `name`, and the columns of that
    loop variable the state is sliced from (None: all of it)."""
    tensor, start, width = view.tensor(name), 0, None
    while True:
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        sliced = _sliced(view, tensor)
        if sliced is None:
            break
        tensor, offset, inner = sliced
        start, width = start + offset, inner if width is None else width
    switch = tensor.op
    if switch.type != "Switch" or switch.inputs[0].op.type != "Merge":
        raise UnsupportedModelError(f"cannot find the loop variable that carries state '{name}'")
    return switch, None if width is None else (start, start + width)
