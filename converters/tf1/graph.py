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
    # Weights in Keras's own layout (kernel, recurrent_kernel, bias), read from a traced Keras cell.
    keras: bool = False
    steps: list[Step] = field(default_factory=list)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.units

    @property
    def scope(self) -> str:
        """The cell's variable scope, for people to recognise it."""
        if self.keras:
            return self.steps[0].output.split(":")[0].rsplit("/", 2)[0]
        scope = self.key.rsplit("/", 1)[0]
        return scope[: -len("/gates")] if self.kind == "gru" and scope.endswith("/gates") else scope

    @property
    def looped(self) -> bool:
        """True for a cell run inside a `while` loop (dynamic_rnn), False when unrolled."""
        return len(self.steps) == 1 and "/while/" in f"/{self.steps[0].output}"

    def describe(self) -> str:
        cls = {"lstm": "LSTMBlockCell" if self.block else "LSTM", "gru": "GRUCell", "rnn": "BasicRNNCell"}
        if self.keras:
            cls = {"lstm": "keras LSTM", "gru": "keras GRU", "rnn": "keras SimpleRNN"}
        parts = [f"units={self.units}"]
        if self.kind == "lstm" and not self.keras:
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
    users = [u for u in view.users(tensor, ADDS) if view.weight(_other(u, tensor)) is not None]
    if len(users) != 1:
        return tensor, None
    ops.add(users[0].name)
    return users[0].outputs[0], view.weight(_other(users[0], tensor))


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
            weight = [t for t in other.op.inputs if view.weight(t)]
            if not weight:
                raise UnsupportedModelError(f"op '{other.op.name}' adds an unknown term to an LSTM gate")
            peephole = view.weight(weight[0])
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
    projection = [u for u in view.users(output, {"MatMul"}) if view.weight(u.inputs[1])] if projected else []
    if projection:
        ops.add(projection[0].name)
        proj = view.weight(projection[0].inputs[1])
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
    found = {"activation": _activation(act), "candidate": (view.weight(matmul.inputs[1]), bias)}
    out = new_h.outputs[0]
    return found, Step(concat.inputs[0].name, (h_prev.name,), (out.name,), out.name, ops)


def _block_step(view: GraphView, op: Any) -> tuple[dict[str, Any], Step]:
    clip = op.get_attr("cell_clip")
    peepholes = tuple(view.weight(op.inputs[k]) for k in (4, 5, 6)) if op.get_attr("use_peephole") else (None,) * 3
    found = {"activation": "tanh", "forget_bias": op.get_attr("forget_bias"), "cell_clip": clip if clip > 0 else None,
             "proj_clip": None, "projection": None, "peepholes": peepholes, "bias": view.weight(op.inputs[7])}
    cs, h = op.outputs[1], op.outputs[6]
    return found, Step(op.inputs[0].name, (op.inputs[1].name, op.inputs[2].name), (cs.name, h.name), h.name, {op.name})


def _recognise_step(view: GraphView, matmul: Any) -> tuple[str, str, dict[str, Any], Step] | None:
    """(kind, kernel variable, hyperparameters, step) for a cell's kernel MatMul, else None."""
    kernel = view.weight(matmul.inputs[1])
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


@dataclass
class Recognised:
    """One step as recognised: cell kind, kernel weight, hyperparameters and weights read."""

    kind: str
    kernel: str
    found: dict[str, Any]
    step: Step

    def weights(self) -> dict[str, str]:
        """Every weight the step reads, by role."""
        found = self.found
        if "keras" in found:
            return {role: name for role, name in found["keras"].items() if name}
        named = {"kernel": self.kernel, "bias": found.get("bias"), "projection": found.get("projection")}
        named.update(zip(("w_i_diag", "w_f_diag", "w_o_diag"), found.get("peepholes", ())))
        named.update(zip(("candidate_kernel", "candidate_bias"), found.get("candidate", ())))
        return {role: name for role, name in named.items() if name}

    def hyperparameters(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: v for k, v in self.found.items()
                                      if k in ("activation", "forget_bias", "cell_clip", "proj_clip", "block")}}


def _previous(view: GraphView, name: str) -> str:
    """The state tensor a step reads, behind identities and sequence_length's copy-through."""
    tensor = view.tensor(name)
    while True:
        tensor = view.through(tensor)
        if tensor.op.type not in ("Select", "SelectV2"):
            return tensor.name
        tensor = tensor.op.inputs[2]


def _copied_through(view: GraphView, name: str) -> str:
    """A final state after sequence_length's copy-through (`select(done, state, new_state)`)."""
    selects = [u for u in view.consumers.get(name, []) if u.type in ("Select", "SelectV2") and u.inputs[2].name == name]
    return selects[0].outputs[0].name if len(selects) == 1 else name


def _chains(view: GraphView, recognised: list[Recognised]) -> list[list[Recognised]]:
    """Steps linked into cells: each step reads the state the step before it wrote."""
    by_state = {r.step.state_out[-1]: r for r in recognised}
    following: dict[str, Recognised] = {}
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


def _check_repetition(view: GraphView, chain: list[Recognised]) -> None:
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
                    "the steps "
                    "compute different functions, so rnnexport will not re-roll them into one loop")


# -- Keras 3 cells, as its TensorFlow backend traces them (x.W and h.U as separate MatMuls) ----


def _terms(view: GraphView, tensor: Any, ops: set[str]) -> tuple[list[Any], list[str]] | None:
    """The MatMuls by a weight and the weights that are added up to make `tensor`, else None."""
    matmuls, biases, todo, seen = [], [], [tensor], set()
    while todo:
        t = todo.pop()
        op = t.op
        if view.weight(t):
            biases.append(view.weight(t))
        elif op.type in ADDS:
            seen.add(op.name)
            todo.extend(op.inputs)
        elif (op.type == "MatMul" and view.weight(op.inputs[1]) and not op.get_attr("transpose_a")
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


def _recurrent(view: GraphView, matmuls: list[Any], units: int, known: list[str]) -> tuple[Any, Any]:
    """(input MatMul, recurrent MatMul). The recurrent weight is [units, k * units]; when both
    are, the one multiplying a zero state (the first step) or a recurrent kernel another step
    revealed is."""
    square = [m for m in matmuls if m.inputs[1].shape[0] == units]
    zero = [m for m in matmuls if m.inputs[0].op.type in ("Fill", "ZerosLike", "Const")]
    values = [view.value(k) for k in known]
    seen = [m for m in matmuls if view.weight(m.inputs[1]) in known
            or any(v.shape == m.inputs[1].shape and np.array_equal(v, view.value(view.weight(m.inputs[1])))
                   for v in values)]
    for found in (square, zero, seen):
        if len(found) == 1:
            return (matmuls[1], matmuls[0]) if found[0] is matmuls[0] else (matmuls[0], matmuls[1])
    raise Ambiguous()


def _keras_found(view: GraphView, x_mm: Any, h_mm: Any, biases: list[str], activation: str) -> dict[str, Any]:
    kernel, recurrent = view.weight(x_mm.inputs[1]), view.weight(h_mm.inputs[1])
    roles = {"kernel": kernel, "recurrent_kernel": recurrent}
    roles.update({f"bias_{i}": b for i, b in enumerate(biases)})
    return {"keras": roles, "activation": activation}


def _keras_lstm(view: GraphView, split: Any, known: list[str]) -> Recognised | None:
    ops = {split.name}
    terms = _terms(view, split.inputs[1], ops)
    if terms is None or len(terms[0]) != 2 or len(terms[1]) > 1:
        return None
    matmuls, biases = terms
    i, f, g, o = split.outputs
    gates = []
    for gate in (i, f, o):
        sigmoid = view.users(gate, {"Sigmoid"})
        if len(sigmoid) != 1:
            raise UnsupportedModelError(f"op '{split.name}' splits an LSTM's gates, but gate {gate.name} has no "
                                        "sigmoid (only recurrent_activation='sigmoid' is supported)")
        gates.append(sigmoid[0])
    act = _only([u for u in view.users(g) if u.type in ACTIVATIONS], "cell input activation", split)
    keep = _only(view.users(gates[1].outputs[0], {"Mul"}), "forget gate product", gates[1])
    write = _only(view.users(gates[0].outputs[0], {"Mul"}), "input gate product", gates[0])
    new_c = _only(view.users(write.outputs[0], ADDS), "cell state", write)
    act_c = _only([u for u in view.users(new_c.outputs[0]) if u.type == act.type], "cell output activation", new_c)
    h = _only(view.users(gates[2].outputs[0], {"Mul"}), "output gate product", gates[2])
    ops.update(op.name for op in (*gates, act, keep, write, new_c, act_c, h))
    c_prev = _other(keep, gates[1].outputs[0])
    units = int(g.shape[-1])
    x_mm, h_mm = _recurrent(view, matmuls, units, known)
    step = Step(x_mm.inputs[0].name, (c_prev.name, h_mm.inputs[0].name), (new_c.outputs[0].name, h.outputs[0].name),
                h.outputs[0].name, ops)
    found = _keras_found(view, x_mm, h_mm, biases, _activation(act))
    return Recognised("lstm", found["keras"]["kernel"], found, step)


def _keras_gru(view: GraphView, z: Any) -> Recognised | None:
    """A Keras GRU (reset_after=True) from its update gate z = sigmoid(x_z + r_z)."""
    add = z.inputs[0].op
    sub = view.users(z.outputs[0], {"Sub"})
    if add.type not in ADDS or len(sub) != 1:
        return None
    parts = [t for t in add.inputs if t.op.type in ("Split", "StridedSlice")]
    if len(parts) != 2:
        return None
    ops = {z.name, add.name, sub[0].name}
    blend = _only([u for u in view.users(z.outputs[0], {"Mul"})], "update gate product", z)
    h_prev = _other(blend, z.outputs[0])
    mix = _only(view.users(sub[0].outputs[0], {"Mul"}), "candidate product", sub[0])
    act = _other(mix, sub[0].outputs[0]).op
    new_h = _only(view.users(mix.outputs[0], ADDS), "new state", mix)
    inner = act.inputs[0].op
    reset = [t.op for t in inner.inputs if t.op.type == "Mul"] if inner.type in ADDS else []
    if act.type not in ACTIVATIONS or len(reset) != 1:
        raise UnsupportedModelError(f"op '{act.name}' ({act.type}) is not a GRU candidate with reset_after=True; "
                                    "rnnexport reads Keras GRUs with reset_after=True from traced graphs")
    r = next((t.op for t in reset[0].inputs if t.op.type == "Sigmoid"), None)
    if r is None:
        raise UnsupportedModelError(f"op '{reset[0].name}' does not apply a GRU's reset gate")
    ops.update({blend.name, mix.name, act.name, new_h.name, inner.name, reset[0].name, r.name, r.inputs[0].op.name})
    sides = []
    for part in parts:
        source = part.op.inputs[1] if part.op.type == "Split" else part.op.inputs[0]
        ops.add(part.op.name)
        terms = _terms(view, source, ops)
        if terms is None or len(terms[0]) != 1 or len(terms[1]) > 1:
            raise UnsupportedModelError(f"op '{part.op.name}' does not slice one MatMul (and a bias) into GRU gates")
        sides.append(terms)
    x_side, h_side = sides if sides[1][0][0].inputs[0].name == h_prev.name else sides[::-1]
    if h_side[0][0].inputs[0].name != h_prev.name:
        raise UnsupportedModelError(f"op '{add.name}': neither side of the GRU update gate reads its state")
    biases = x_side[1] + h_side[1]
    if len(biases) == 1:
        raise UnsupportedModelError(f"op '{add.name}': a GRU with reset_after=True adds two biases, found one")
    out = new_h.outputs[0]
    step = Step(x_side[0][0].inputs[0].name, (h_prev.name,), (out.name,), out.name, ops)
    found = _keras_found(view, x_side[0][0], h_side[0][0], biases, _activation(act))
    return Recognised("gru", found["keras"]["kernel"], found, step)


def _keras_rnn(view: GraphView, act: Any, known: list[str]) -> Recognised | None:
    ops = {act.name}
    terms = _terms(view, act.inputs[0], ops)
    if terms is None or len(terms[0]) != 2 or len(terms[1]) > 1:
        return None
    x_mm, h_mm = _recurrent(view, terms[0], int(act.outputs[0].shape[-1]), known)
    out = act.outputs[0]
    step = Step(x_mm.inputs[0].name, (h_mm.inputs[0].name,), (out.name,), out.name, ops)
    found = _keras_found(view, x_mm, h_mm, terms[1], _activation(act))
    return Recognised("rnn", found["keras"]["kernel"], found, step)


def _keras_step(view: GraphView, op: Any, known: list[str]) -> Recognised | None:
    if op.type == "Split" and len(op.outputs) == 4:
        return _keras_lstm(view, op, known)
    if op.type == "Sigmoid":
        return _keras_gru(view, op)
    if op.type in ACTIVATIONS and op.type != "Identity":
        return _keras_rnn(view, op, known)
    return None


def _keras_cell(view: GraphView, key: str, chain: list[Recognised]) -> Cell:
    first = chain[0]
    roles = first.found["keras"]
    kernel, recurrent = view.value(roles["kernel"]), view.value(roles["recurrent_kernel"])
    biases = [view.value(roles[k]) for k in sorted(roles) if k.startswith("bias_")]
    units = recurrent.shape[0]
    if first.kind == "gru":
        bias = np.stack(biases)
    else:
        bias = biases[0] if biases else np.zeros(kernel.shape[1], np.float32)
    weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
    cell = Cell(key, first.kind, units, kernel.shape[0], weights, tuple(roles.values()),
                activation=first.found["activation"], keras=True)
    cell.steps = [r.step for r in chain]
    return cell


def _cell(view: GraphView, key: str, chain: list[Recognised]) -> Cell:
    kind, kernel, found = chain[0].kind, chain[0].kernel, chain[0].found
    steps = [r.step for r in chain]
    if "keras" in found:
        return _keras_cell(view, key, chain)
    weights = {"kernel": view.value(kernel)}
    variables = [kernel]
    if found.get("bias"):
        weights["bias"] = view.value(found["bias"])
        variables.append(found["bias"])
    columns = weights["kernel"].shape[1]
    units = {"lstm": columns // 4, "gru": columns // 2, "rnn": columns}[kind]
    cell = Cell(key, kind, units, 0, weights, (), activation=found["activation"])
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
    cell.steps = steps
    return cell


def find_cells(view: GraphView, scope: set[str]) -> list[Cell]:
    """Every cell whose steps lie in `scope` (op names), its steps in time order. Steps that the
    state links into one chain must be one cell repeated: the same kind, settings and weights."""
    recognised: list[Recognised] = []
    ambiguous = []
    for name in sorted(scope):
        op = view.op(name)
        if op.type == "LSTMBlockCell":
            found, step = _block_step(view, op)
            found["block"] = True
            kernel = view.weight(op.inputs[3])
            if kernel is None:
                raise UnsupportedModelError(f"op '{op.name}' (LSTMBlockCell) does not read its weights from a variable")
            recognised.append(Recognised("lstm", kernel, found, step))
        elif op.type == "MatMul":
            found = _recognise_step(view, op)
            if found:
                recognised.append(Recognised(*found))
        else:
            try:
                keras = _keras_step(view, op, [])
            except Ambiguous:
                ambiguous.append(op)
                continue
            if keras:
                recognised.append(keras)
    known = sorted({r.found["keras"]["recurrent_kernel"] for r in recognised if "keras" in r.found})
    for op in ambiguous:
        try:
            recognised.append(_keras_step(view, op, known))
        except Ambiguous:
            raise UnsupportedModelError(f"op '{op.name}': cannot tell which of its two MatMuls reads the cell's "
                                        "state") from None
    cells, keys = [], set()
    for chain in _chains(view, recognised):
        _check_repetition(view, chain)
        key = chain[0].kernel
        while key in keys:
            key += "'"
        keys.add(key)
        cell = _cell(view, key, chain)
        if len(chain) > 1:
            last = cell.steps[-1]
            last.state_out = tuple(_copied_through(view, name) for name in last.state_out)
        cells.append(cell)
    return cells


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
