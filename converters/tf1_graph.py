"""Reading a TF1 Saver checkpoint's meta graph: where the recurrent cells are and what they compute.

Cells are found by structure, never by scope name: a cell step is a MatMul of
`concat([x_t, h_prev])` with a 2-D variable followed by the ops each TF1 cell class emits (or
one `LSTMBlockCell` op). Hyperparameters that are not variables (forget bias, activations, clip
values) are read from the constants those ops consume. Every float op between the inputs and
the outputs must belong to a recognised cell, the embedding lookup or the projection after the
cells; anything else is named and refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexport.errors import UnsupportedModelError

IDENTITY_LIKE = {"Identity", "Enter", "ReadVariableOp", "Snapshot", "StopGradient"}
VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
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


@dataclass
class Step:
    """One application of a cell: its input `x`, state tensors in and out, output tensor.

    `state_in`/`state_out` hold (c, h) for LSTMs and (h,) otherwise, as tensor names."""

    x: str
    state_in: tuple[str, ...]
    state_out: tuple[str, ...]
    output: str
    ops: set[str] = field(default_factory=set)


@dataclass
class Cell:
    """A recognised cell with its weights in TF1's own layout and the hyperparameters read from
    the graph. `kind` is lstm, gru or rnn; `steps` are in time order (one step inside a loop)."""

    key: str
    kind: str
    units: int
    input_size: int
    weights: dict[str, np.ndarray]
    variables: tuple[str, ...]
    activation: str = "tanh"
    forget_bias: float = 0.0
    cell_clip: float | None = None
    proj_clip: float | None = None
    num_proj: int | None = None
    peepholes: bool = False
    block: bool = False
    steps: list[Step] = field(default_factory=list)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.units

    @property
    def scope(self) -> str:
        """The cell's variable scope, for people to recognise it."""
        scope = self.key.rsplit("/", 1)[0]
        return scope[: -len("/gates")] if self.kind == "gru" and scope.endswith("/gates") else scope

    @property
    def looped(self) -> bool:
        """True for a cell run inside a `while` loop (dynamic_rnn), False when unrolled."""
        return len(self.steps) == 1 and "/while/" in f"/{self.steps[0].output}"

    def describe(self) -> str:
        cls = {"lstm": "LSTMBlockCell" if self.block else "LSTM", "gru": "GRUCell", "rnn": "BasicRNNCell"}
        parts = [f"units={self.units}"]
        if self.kind == "lstm":
            parts.append(f"forget_bias={self.forget_bias:g}")
        if self.activation != "tanh":
            parts.append(f"activation={self.activation}")
        if self.peepholes:
            parts.append("peepholes")
        if self.num_proj:
            parts.append(f"num_proj={self.num_proj}")
        if self.cell_clip is not None:
            parts.append(f"cell_clip={self.cell_clip:g}")
        if self.proj_clip is not None:
            parts.append(f"proj_clip={self.proj_clip:g}")
        return f"{cls[self.kind]}({', '.join(parts)})"


class GraphView:
    """A tf.Graph with the lookups recognition needs, restricted to the ops in `scope`."""

    def __init__(self, graph: Any, reader: Any) -> None:
        self.graph = graph
        self.reader = reader
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

    def variable(self, tensor: Any) -> str | None:
        """The variable a tensor reads, if it is one."""
        op = self.through(tensor).op
        return op.name if op.type in VARIABLE_OPS else None

    def value(self, name: str) -> np.ndarray:
        return np.asarray(self.reader.get_tensor(name))

    def const(self, tensor: Any) -> np.ndarray | None:
        op = self.through(tensor).op
        if op.type != "Const":
            return None
        from tensorflow.python.framework import tensor_util

        return tensor_util.MakeNdarray(op.get_attr("value"))

    def scalar(self, tensor: Any) -> float | None:
        value = self.const(tensor)
        return float(value) if value is not None and value.size == 1 else None


def _only(ops: list[Any], what: str, near: Any) -> Any:
    if len(ops) != 1:
        raise UnsupportedModelError(f"could not read the {what} after op '{near.name}' ({near.type})")
    return ops[0]


def _other(op: Any, tensor: Any) -> Any:
    """The other input of a binary op."""
    a, b = op.inputs[0], op.inputs[1]
    return b if a.name == tensor.name else a


def _bias_after(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, str | None]:
    users = [u for u in view.users(tensor, ADDS) if view.variable(_other(u, tensor)) is not None]
    if len(users) != 1:
        return tensor, None
    ops.add(users[0].name)
    return users[0].outputs[0], view.variable(_other(users[0], tensor))


def _clip_after(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, float | None]:
    """A `clip_by_value(t, -v, v)` after `tensor` (Minimum then Maximum, or ClipByValue)."""
    for user in view.users(tensor, {"ClipByValue"}):
        ops.add(user.name)
        return user.outputs[0], view.scalar(user.inputs[2])
    for user in view.users(tensor, {"Minimum"}):
        high = view.scalar(_other(user, tensor))
        after = view.users(user.outputs[0], {"Maximum"})
        if high is not None and len(after) == 1 and view.scalar(_other(after[0], user.outputs[0])) == -high:
            ops.update({user.name, after[0].name})
            return after[0].outputs[0], high
    return tensor, None


def _gate(view: GraphView, tensor: Any, ops: set[str]) -> tuple[Any, float, str | None, Any]:
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
        add = _only([u for u in users if u.type in ADDS], "gate", tensor.op)
        other = _other(add, tensor)
        value = view.scalar(other)
        if value is not None:
            constant += value
        elif other.op.type == "Mul":
            weight = [t for t in other.op.inputs if view.variable(t)]
            if not weight:
                raise UnsupportedModelError(f"op '{other.op.name}' adds an unknown term to an LSTM gate")
            peephole = view.variable(weight[0])
            state = _other(other.op, weight[0])
            ops.add(other.op.name)
        else:
            raise UnsupportedModelError(f"op '{add.name}' adds an unknown term ({other.op.type}) to an LSTM gate")
        ops.add(add.name)
        tensor = add.outputs[0]


def _activation(op: Any) -> str:
    if op.type not in ACTIVATIONS:
        raise UnsupportedModelError(f"op '{op.name}': activation {op.type} is not supported in TF1 cells "
                                    f"(supported: {', '.join(sorted(ACTIVATIONS))})")
    return ACTIVATIONS[op.type]


def _lstm_step(view: GraphView, concat: Any, matmul: Any, split: Any, ops: set[str]) -> tuple[dict[str, Any], Step]:
    i, j, f, o = split.outputs
    sig_i, _, peep_i, _ = _gate(view, i, ops)
    sig_f, forget_bias, peep_f, c_prev = _gate(view, f, ops)
    act_j = _only([u for u in view.users(j) if u.type in ACTIVATIONS or u.type == "Identity"], "cell input", split)
    ops.add(act_j.name)
    keep = _only(view.users(sig_f.outputs[0], {"Mul"}), "forget gate product", sig_f)
    c_prev = _other(keep, sig_f.outputs[0]) if c_prev is None else c_prev
    write = _only(view.users(sig_i.outputs[0], {"Mul"}), "input gate product", sig_i)
    new_c = _only(view.users(write.outputs[0], ADDS), "cell state", write)
    ops.update({keep.name, write.name, new_c.name})
    c_out, cell_clip = _clip_after(view, new_c.outputs[0], ops)
    sig_o, _, peep_o, _ = _gate(view, o, ops)
    act_c = _only([u for u in view.users(c_out) if u.type == act_j.type], "cell output activation", c_out.op)
    m = _only(view.users(sig_o.outputs[0], {"Mul"}), "output gate product", sig_o)
    ops.update({act_c.name, m.name})
    output, proj, proj_clip = m.outputs[0], None, None
    # Only a projected cell feeds back a state narrower than its units; any other MatMul of the
    # output is whatever follows the cell.
    units = split.outputs[0].shape[-1]
    projected = concat.inputs[1].shape[-1] not in (None, units)
    projection = [u for u in view.users(output, {"MatMul"}) if view.variable(u.inputs[1])] if projected else []
    if projection:
        ops.add(projection[0].name)
        proj = view.variable(projection[0].inputs[1])
        output, proj_clip = _clip_after(view, projection[0].outputs[0], ops)
    found = {"activation": _activation(act_j), "forget_bias": forget_bias, "cell_clip": cell_clip,
             "proj_clip": proj_clip, "projection": proj, "peepholes": (peep_i, peep_f, peep_o)}
    h_prev = concat.inputs[1]
    return found, Step(concat.inputs[0].name, (c_prev.name, h_prev.name), (c_out.name, output.name), output.name, ops)


def _gru_step(view: GraphView, concat: Any, split: Any, ops: set[str]) -> tuple[dict[str, Any], Step]:
    r, u = split.outputs
    h_prev = concat.inputs[1]
    reset = _only(view.users(r, {"Mul"}), "reset gate product", split)
    concat2 = _only(view.users(reset.outputs[0], {"ConcatV2"}), "candidate input", reset)
    matmul = _only(view.users(concat2.outputs[0], {"MatMul"}), "candidate kernel", concat2)
    candidate, bias = _bias_after(view, matmul.outputs[0], ops)
    act = _only([o for o in view.users(candidate) if o.type in ACTIVATIONS], "candidate activation", candidate.op)
    ops.update({reset.name, concat2.name, matmul.name, act.name})
    mix = _only(view.users(act.outputs[0], {"Mul"}), "candidate product", act)
    new_h = _only(view.users(mix.outputs[0], ADDS), "new state", mix)
    keep = _other(new_h, mix.outputs[0]).op
    ops.update({mix.name, new_h.name, keep.name})
    ops.update(o.name for o in view.users(u, {"Sub"}))
    found = {"activation": _activation(act), "candidate": (view.variable(matmul.inputs[1]), bias)}
    out = new_h.outputs[0]
    return found, Step(concat.inputs[0].name, (h_prev.name,), (out.name,), out.name, ops)


def _block_step(view: GraphView, op: Any) -> tuple[dict[str, Any], Step]:
    clip = op.get_attr("cell_clip")
    peepholes = tuple(view.variable(op.inputs[k]) for k in (4, 5, 6)) if op.get_attr("use_peephole") else (None,) * 3
    found = {"activation": "tanh", "forget_bias": op.get_attr("forget_bias"), "cell_clip": clip if clip > 0 else None,
             "proj_clip": None, "projection": None, "peepholes": peepholes, "bias": view.variable(op.inputs[7])}
    cs, h = op.outputs[1], op.outputs[6]
    return found, Step(op.inputs[0].name, (op.inputs[1].name, op.inputs[2].name), (cs.name, h.name), h.name, {op.name})


def _recognise_step(view: GraphView, matmul: Any) -> tuple[str, str, dict[str, Any], Step] | None:
    """(kind, kernel variable, hyperparameters, step) for a cell's kernel MatMul, else None."""
    kernel = view.variable(matmul.inputs[1])
    concat = matmul.inputs[0].op
    if kernel is None or concat.type != "ConcatV2" or len(concat.inputs) != 3:
        return None
    ops = {matmul.name, concat.name}
    pre, bias = _bias_after(view, matmul.outputs[0], ops)
    users = view.users(pre)
    splits = [u for u in users if u.type == "Split" and len(u.outputs) == 4]
    if splits:
        ops.add(splits[0].name)
        found, step = _lstm_step(view, concat, matmul, splits[0], ops)
        return "lstm", kernel, {**found, "bias": bias}, step
    sigmoid = [u for u in users if u.type == "Sigmoid"]
    gru_split = [u for s in sigmoid for u in view.users(s.outputs[0], {"Split"}) if len(u.outputs) == 2]
    if gru_split:
        ops.update({sigmoid[0].name, gru_split[0].name})
        found, step = _gru_step(view, concat, gru_split[0], ops)
        return "gru", kernel, {**found, "bias": bias}, step
    if concat.inputs[1].op.type == "Mul" and any(o.type == "Split" for o in
                                                  (t.op for t in concat.inputs[1].op.inputs)):
        return None  # a GRU's candidate MatMul, claimed with its gates
    act = [u for u in users if u.type in ACTIVATIONS]
    if len(act) == 1:
        ops.add(act[0].name)
        out = act[0].outputs[0]
        step = Step(concat.inputs[0].name, (concat.inputs[1].name,), (out.name,), out.name, ops)
        return "rnn", kernel, {"activation": _activation(act[0]), "bias": bias}, step
    return None


def _order(steps: list[Step]) -> list[Step]:
    """Unrolled steps in time order: each step's previous state is the step before's output."""
    by_output = {s.state_out[-1]: s for s in steps}
    first = [s for s in steps if s.state_in[-1] not in by_output]
    if len(first) != 1:
        raise UnsupportedModelError("the unrolled steps of a cell do not form one chain")
    following = {s.state_in[-1]: s for s in steps}
    ordered = [first[0]]
    while ordered[-1].state_out[-1] in following:
        ordered.append(following[ordered[-1].state_out[-1]])
    if len(ordered) != len(steps):
        raise UnsupportedModelError("the unrolled steps of a cell do not form one chain")
    return ordered


def _cell(view: GraphView, kind: str, kernel: str, found: dict[str, Any], steps: list[Step]) -> Cell:
    weights = {"kernel": view.value(kernel)}
    variables = [kernel]
    if found.get("bias"):
        weights["bias"] = view.value(found["bias"])
        variables.append(found["bias"])
    columns = weights["kernel"].shape[1]
    units = {"lstm": columns // 4, "gru": columns // 2, "rnn": columns}[kind]
    cell = Cell(kernel, kind, units, 0, weights, (), activation=found["activation"])
    if kind == "lstm":
        cell.forget_bias = float(found["forget_bias"])
        cell.cell_clip, cell.proj_clip = found["cell_clip"], found["proj_clip"]
        peepholes = found["peepholes"]
        if any(peepholes):
            cell.peepholes = True
            for name, variable in zip(("w_i_diag", "w_f_diag", "w_o_diag"), peepholes):
                weights[name] = view.value(variable) if variable else np.zeros(units, np.float32)
                variables += [variable] if variable else []
        if found["projection"]:
            weights["projection"] = view.value(found["projection"])
            cell.num_proj = int(weights["projection"].shape[1])
            variables.append(found["projection"])
        cell.block = bool(found.get("block"))
    if kind == "gru":
        candidate, bias = found["candidate"]
        weights["candidate_kernel"] = view.value(candidate)
        variables.append(candidate)
        if bias:
            weights["candidate_bias"] = view.value(bias)
            variables.append(bias)
    if "bias" not in weights:
        raise UnsupportedModelError(f"cell '{kernel}' has no bias variable; TF1 cells always add one")
    cell.input_size = weights["kernel"].shape[0] - cell.output_size
    cell.variables = tuple(variables)
    cell.steps = steps if len(steps) == 1 else _order(steps)
    return cell


def find_cells(view: GraphView, scope: set[str]) -> list[Cell]:
    """Every cell whose steps lie in `scope` (op names), its steps in time order."""
    grouped: dict[str, tuple[str, dict[str, Any], list[Step]]] = {}
    for name in sorted(scope):
        op = view.op(name)
        if op.type == "LSTMBlockCell":
            found, step = _block_step(view, op)
            found["block"] = True
            kernel = view.variable(op.inputs[3])
            if kernel is None:
                raise UnsupportedModelError(f"op '{op.name}' (LSTMBlockCell) does not read its weights from a variable")
            grouped.setdefault(kernel, ("lstm", found, []))[2].append(step)
        elif op.type == "MatMul":
            recognised = _recognise_step(view, op)
            if recognised:
                kind, kernel, found, step = recognised
                grouped.setdefault(kernel, (kind, found, []))[2].append(step)
    return [_cell(view, kind, kernel, found, steps) for kernel, (kind, found, steps) in grouped.items()]


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
        if all(not t.dtype.is_floating for t in op.outputs) and op.outputs:
            continue
        yield op
