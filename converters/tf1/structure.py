"""A recognised TF1 graph as layers: where the first recurrent layer's input comes from (traced
back to a placeholder, maybe through an embedding), the recurrent layers in order, and the
projection after them (`heads`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport_converters.tf1 import dropout
from rnnexport_converters.tf1 import frontends
from rnnexport_converters.tf1.cells import Cell
from rnnexport_converters.tf1.graph import GraphView
from rnnexport_converters.tf1.leftout import LeftOut
from rnnexport.errors import UnsupportedModelError


@dataclass
class Layer:
    """One recurrent layer: a forward cell and, when bidirectional, a backward one."""

    forward: Cell
    backward: Cell | None = None
    between: tuple[frontends.Stage, ...] = ()  # dense layers between the layer before and this one

    @property
    def cells(self) -> list[Cell]:
        return [self.forward] + ([self.backward] if self.backward else [])

    @property
    def output_size(self) -> int:
        return sum(c.output_size for c in self.cells)


@dataclass
class Structure:
    """What the graph computes between its inputs and one output."""

    data_input: str
    lengths_input: str | None
    embedding: np.ndarray | None
    layers: list[Layer]
    head: list[tuple[str, Any]]
    frontend: tuple[frontends.Stage, ...] = ()

    @property
    def bidirectional(self) -> bool:
        return any(layer.backward for layer in self.layers)


@dataclass(frozen=True)
class Origin:
    """Where a cell's input comes from: a placeholder (maybe through an embedding) or a cell's
    output at step `index`; `reversed` when the path reverses time."""

    kind: str
    name: str
    index: int | None = None
    reversed: bool = False
    embedding: str | None = None
    time_axis: int | None = None
    frontend: tuple[frontends.Stage, ...] = ()  # applied to the input, in order


class Tracer:
    """Walks from a tensor back to the placeholders or cell outputs it is made of."""

    def __init__(self, view: GraphView, cells: list[Cell], inputs: set[str] = frozenset()) -> None:
        """`inputs`: tensors (besides placeholders) where the graph is cut."""
        self.view = view
        self.inputs = inputs
        self.step_of: dict[str, tuple[Cell, int]] = {}
        for cell in cells:
            for index, step in enumerate(cell.steps):
                self.step_of[step.output] = (cell, index)
        self.claimed: set[str] = set()
        self.left_out = LeftOut(view, self.claimed)
        for output, place in list(self.step_of.items()):
            for alias in self.left_out.aliases(view.tensor(output)):
                self.step_of[alias] = place

    @property
    def gates(self) -> set[str]:
        """Placeholders inference feeds to leave out what only training computes (keep_prob)."""
        return self.left_out.gates

    def carried(self, op: Any) -> list[Any] | None:
        """The inputs whose values `op` passes on unchanged at inference (`LeftOut.carried`)."""
        return self.left_out.carried(op)

    def permuted(self, op: Any, axis: int | None) -> int | None:
        """The input axis a Transpose maps to output axis `axis`; dynamic_rnn builds its perm as
        concat([1, 0], range(2, rank)), a swap of the first two axes."""
        if axis is None:
            return None
        perm = self.view.const(op.inputs[1])
        if perm is None:
            head = op.inputs[1].op
            first = self.view.const(head.inputs[0]) if head.type == "ConcatV2" else None
            if first is None or list(first) != [1, 0]:
                raise UnsupportedModelError(f"op '{op.name}' transposes by a permutation rnnexport cannot read")
            return {0: 1, 1: 0}.get(axis, axis)
        return int(perm[axis])

    def origins(self, tensor: Any, index: int | None = None, reverse: bool = False,
                axis: int | None = None) -> list[Origin]:
        """Where `tensor` comes from: walked back op by op (see `STEPS_BACK`) from the step
        `index` along time `axis` it selects, `reverse` when time was reversed on the way."""
        at = _Position(tensor, index, reverse, axis)
        while True:
            if at.tensor.name in self.step_of:
                cell, step = self.step_of[at.tensor.name]
                return [Origin("cell", cell.key, step, at.reverse, frontend=tuple(reversed(at.frontend)))]
            if at.tensor.name in self.inputs:
                return [at.input_origin(at.tensor.name)]
            op = at.tensor.op
            found = STEPS_BACK.get(op.type, _refuse)(self, op, at)
            if found is not None:
                return found


@dataclass
class _Position:
    """Where a walk back from a cell's input stands: the tensor, the time step it selects (if
    any), whether time was reversed on the way, and which of its axes is time."""

    tensor: Any
    index: int | None
    reverse: bool
    axis: int | None
    frontend: list[frontends.Stage] = field(default_factory=list)  # met walking back, nearest the cells first

    def input_origin(self, name: str, embedding: str | None = None) -> Origin:
        return Origin("input", name, self.index, self.reverse, embedding, self.axis, tuple(reversed(self.frontend)))


# A step back through one op: moves `at` to the op's input and returns None, or returns the
# origins found there.
StepBack = Callable[[Tracer, Any, _Position], "list[Origin] | None"]


def _refuse(tracer: Tracer, op: Any, at: _Position) -> None:
    cut = op.outputs[0].name if op.outputs else op.name
    raise UnsupportedModelError(
        f"op '{op.name}' ({op.type}) lies between the inputs and a recurrent cell; rnnexport only places "
        f"embedding lookups, slicing and reshaping there. To export from that op's result, cut the graph "
        f"with --inputs {cut}")


def _first_input(tracer: Tracer, op: Any, at: _Position) -> None:
    at.tensor = op.inputs[0]


def _transpose(tracer: Tracer, op: Any, at: _Position) -> None:
    at.tensor, at.axis = op.inputs[0], tracer.permuted(op, at.axis)


def _pack(tracer: Tracer, op: Any, at: _Position) -> None:
    if at.index is None or at.axis != op.get_attr("axis"):
        _refuse(tracer, op, at)
    at.tensor, at.index, at.axis = op.inputs[at.index], None, None


def _reverse(tracer: Tracer, op: Any, at: _Position) -> None:
    at.tensor, at.reverse = op.inputs[0], not at.reverse


def _unpack(tracer: Tracer, op: Any, at: _Position) -> None:
    at.index = at.index if at.index is not None else at.tensor.value_index
    at.tensor, at.axis = op.inputs[0], op.get_attr("axis")


def _strided_slice(tracer: Tracer, op: Any, at: _Position) -> None:
    begin = tracer.view.const(op.inputs[1])
    mask = op.get_attr("shrink_axis_mask")
    axes = [a for a in range(len(begin)) if mask >> a & 1] if begin is not None else []
    if at.index is None and len(axes) == 1:
        at.index, at.axis = int(begin[axes[0]]), axes[0]
    at.tensor = op.inputs[0]


def _tensor_array_read(tracer: Tracer, op: Any, at: _Position) -> None:
    tensor = tracer.view.through(op.inputs[2])
    if tensor.op.type != "TensorArrayScatterV3":
        raise UnsupportedModelError(f"op '{op.name}' reads a TensorArray rnnexport cannot trace")
    at.tensor, at.axis = tensor.op.inputs[2], 0


def _tensor_array_gather(tracer: Tracer, op: Any, at: _Position) -> None:
    writes = tracer.view.written(op)
    if len(writes) != 1:
        raise UnsupportedModelError(f"op '{op.name}' gathers a TensorArray rnnexport cannot trace")
    at.tensor = writes[0]


def _select(tracer: Tracer, op: Any, at: _Position) -> None:
    """dynamic_rnn's copy-through past sequence_length (the new value is the third input), or dropout."""
    found = dropout.dropped(op)
    if found is not None:
        tracer.left_out.drop(found, op)
        at.tensor = found.data
        return
    at.tensor = op.inputs[2]


def _merge(tracer: Tracer, op: Any, at: _Position) -> None:
    """A loop's merge (its first input enters the loop) or a tf.cond on a training flag."""
    at.tensor = (tracer.carried(op) or op.inputs)[0]


def _dropout(tracer: Tracer, op: Any, at: _Position) -> None:
    found = dropout.dropped(op)
    if found is None:
        _refuse(tracer, op, at)
    tracer.left_out.drop(found, op)
    at.tensor = found.data


def _concat(tracer: Tracer, op: Any, at: _Position) -> list[Origin]:
    return [origin for value in op.inputs[:-1] for origin in tracer.origins(value, at.index, at.reverse, at.axis)]


def _placeholder(tracer: Tracer, op: Any, at: _Position) -> list[Origin]:
    return [at.input_origin(at.tensor.name)]


def _lookup(tracer: Tracer, op: Any, at: _Position) -> list[Origin]:
    table = tracer.view.weight(op.inputs[0])
    if table is None:
        raise UnsupportedModelError(f"op '{op.name}' looks up ids in something that is not a variable")
    tracer.claimed.add(op.name)
    ids = tracer.view.through(op.inputs[1])
    if ids.op.type == "Cast" and ids.name not in tracer.inputs:
        # Keras's Embedding casts ids fed as floats (Keras 2 models often take them so).
        tracer.claimed.add(ids.op.name)
        ids = tracer.view.through(ids.op.inputs[0])
    if ids.op.type != "Placeholder" and ids.name not in tracer.inputs:
        raise UnsupportedModelError(f"op '{op.name}' looks up ids that do not come from a placeholder")
    return [at.input_origin(ids.name, table)]


# The ops a cell's input may be reached through, by type; any other is refused, naming it.
STEPS_BACK: dict[str, StepBack] = {
    "Transpose": _transpose,
    **dict.fromkeys(("Identity", "Enter", "Squeeze", "ExpandDims", "Reshape", "Exit", "Switch"), _first_input),
    "Merge": _merge,
    "Pack": _pack,
    "ReverseV2": _reverse,
    "ReverseSequence": _reverse,
    "Unpack": _unpack,
    "StridedSlice": _strided_slice,
    "TensorArrayReadV3": _tensor_array_read,
    "TensorArrayGatherV3": _tensor_array_gather,
    "Select": _select,
    "SelectV2": _select,
    "Mul": _dropout,
    "ConcatV2": _concat,
    "Placeholder": _placeholder,
    "PlaceholderWithDefault": _placeholder,
    "Gather": _lookup,
    "GatherV2": _lookup,
    "ResourceGather": _lookup,
    "Split": frontends.split,
    **dict.fromkeys(frontends.OPS, frontends.step_back),
}


def _time(origin: Origin, cells: dict[str, Cell], directions: dict[str, bool]) -> tuple[str, bool]:
    """(the source a cell reads, whether the cell runs backward in time)."""
    if origin.kind == "cell":
        source_cell = cells[origin.name]
        steps = len(source_cell.steps)
        backward_source = directions[origin.name]
        if steps > 1:
            time = steps - 1 - origin.index if backward_source else origin.index
            return origin.name, time != 0
        return origin.name, origin.reversed != backward_source
    if origin.index is not None:
        return origin.name, origin.index != 0
    return origin.name, origin.reversed


def layers_of(view: GraphView, cells: list[Cell], tracer: Tracer) -> tuple[list[Layer], list[Origin]]:
    """The recurrent layers in order, and where the first one's input comes from."""
    by_key = {c.key: c for c in cells}
    directions: dict[str, bool] = {}
    sources: dict[str, tuple[str, ...]] = {}
    inputs: dict[str, list[Origin]] = {}
    pending = list(cells)
    while pending:
        progressed = False
        for cell in list(pending):
            origins = tracer.origins(view.tensor(cell.steps[0].x))
            needed = [o.name for o in origins if o.kind == "cell"]
            if any(name not in directions for name in needed):
                continue
            timed = [_time(o, by_key, directions) for o in origins]
            backward = {b for _, b in timed}
            if len(backward) != 1:
                raise UnsupportedModelError(f"cell '{cell.key}' reads its inputs in mixed time orders")
            directions[cell.key] = backward.pop()
            sources[cell.key] = tuple(sorted({name for name, _ in timed}))
            inputs[cell.key] = origins
            pending.remove(cell)
            progressed = True
        if not progressed:
            raise UnsupportedModelError(f"cannot order the recurrent cells; '{pending[0].key}' reads a cycle")
    groups: dict[tuple[str, ...], list[Cell]] = {}
    for cell in cells:
        groups.setdefault(sources[cell.key], []).append(cell)
    layers = []
    previous: tuple[str, ...] | None = None
    first_inputs: list[Origin] = []
    for _ in range(len(groups)):
        if previous is None:
            matches = [k for k in groups if all(by_key.get(n) is None for n in k)]
        else:
            matches = [k for k in groups if set(k) == set(previous)]
        if len(matches) != 1:
            cell = next(c for c in cells if all(c not in layer.cells for layer in layers))
            raise UnsupportedModelError(f"cell '{cell.key}' does not fit a stack of layers (it reads "
                                        f"{', '.join(sources[cell.key])})")
        group = groups[matches[0]]
        forward = [c for c in group if not directions[c.key]]
        backward = [c for c in group if directions[c.key]]
        if len(forward) != 1 or len(backward) > 1:
            raise UnsupportedModelError(f"cells {', '.join(c.key for c in group)} read the same input but do not "
                                        "form one forward (and one backward) layer")
        if previous is None:
            first_inputs = inputs[forward[0].key]
        dense = frontends.between(tracer, forward + backward, inputs, len(layers)) if layers else ()
        layers.append(Layer(forward[0], backward[0] if backward else None, dense))
        previous = tuple(c.key for c in group)
    frontends.walk_every_step(tracer, layers[0].cells, first_inputs)
    return layers, first_inputs


def claimed_ops(layers: list[Layer]) -> set[str]:
    ops: set[str] = set()
    for layer in layers:
        for cell in layer.cells:
            for step in cell.steps:
                ops |= step.ops
    return ops
