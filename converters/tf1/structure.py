"""A recognised TF1 graph as layers (embedding, recurrent layers, projection) and the equivalent
Keras model, with TF1 weights converted to Keras's conventions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from rnnexport_converters.tf1.graph import ADDS, HEAD_ACTIVATIONS, Cell, GraphView
from rnnexport.errors import UnsupportedModelError

# How a source output holds the per-step outputs Y[batch, time, C] the export returns.
LAYOUTS = ("batch-major", "time-major", "flat batch-major", "flat time-major", "last step")


@dataclass
class Layer:
    """One recurrent layer: a forward cell and, when bidirectional, a backward one."""

    forward: Cell
    backward: Cell | None = None

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
    claimed: set[str] = field(default_factory=set)

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

    def _permuted(self, op: Any, axis: int | None) -> int | None:
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
        view = self.view
        while True:
            if tensor.name in self.step_of:
                cell, step = self.step_of[tensor.name]
                return [Origin("cell", cell.key, step, reverse)]
            if tensor.name in self.inputs:
                return [Origin("input", tensor.name, index, reverse, time_axis=axis)]
            op = tensor.op
            kind = op.type
            if kind == "Transpose":
                tensor, axis = op.inputs[0], self._permuted(op, axis)
            elif kind in ("Identity", "Enter", "Squeeze", "ExpandDims", "Reshape", "Exit", "Switch", "Merge"):
                tensor = op.inputs[0]
            elif kind == "Pack" and index is not None and axis == op.get_attr("axis"):
                tensor, index, axis = op.inputs[index], None, None
            elif kind in ("ReverseV2", "ReverseSequence"):
                tensor, reverse = op.inputs[0], not reverse
            elif kind == "Unpack":
                index = index if index is not None else tensor.value_index
                tensor, axis = op.inputs[0], op.get_attr("axis")
            elif kind == "StridedSlice":
                begin = view.const(op.inputs[1])
                mask = op.get_attr("shrink_axis_mask")
                axes = [a for a in range(len(begin)) if mask >> a & 1] if begin is not None else []
                if index is None and len(axes) == 1:
                    index, axis = int(begin[axes[0]]), axes[0]
                tensor = op.inputs[0]
            elif kind == "TensorArrayReadV3":
                tensor = view.through(op.inputs[2])
                if tensor.op.type != "TensorArrayScatterV3":
                    raise UnsupportedModelError(f"op '{op.name}' reads a TensorArray rnnexport cannot trace")
                tensor, axis = tensor.op.inputs[2], 0
            elif kind == "TensorArrayGatherV3":
                writes = view.written(op)
                if len(writes) != 1:
                    raise UnsupportedModelError(f"op '{op.name}' gathers a TensorArray rnnexport cannot trace")
                tensor = writes[0]
            elif kind in ("Select", "SelectV2"):
                tensor = op.inputs[2]
            elif kind == "ConcatV2":
                found = []
                for value in op.inputs[:-1]:
                    found += self.origins(value, index, reverse, axis)
                return found
            elif kind in ("Placeholder", "PlaceholderWithDefault"):
                return [Origin("input", tensor.name, index, reverse, time_axis=axis)]
            elif kind in ("Gather", "GatherV2", "ResourceGather"):
                table = view.weight(op.inputs[0])
                if table is None:
                    raise UnsupportedModelError(f"op '{op.name}' looks up ids in something that is not a variable")
                self.claimed.add(op.name)
                ids = view.through(op.inputs[1])
                if ids.op.type != "Placeholder" and ids.name not in self.inputs:
                    raise UnsupportedModelError(f"op '{op.name}' looks up ids that do not come from a placeholder")
                return [Origin("input", ids.name, index, reverse, table, axis)]
            else:
                cut = op.outputs[0].name if op.outputs else op.name
                raise UnsupportedModelError(
                    f"op '{op.name}' ({kind}) lies between the inputs and a recurrent cell; rnnexport only places "
                    f"embedding lookups, slicing and reshaping there. To export from that op's result, cut the graph "
                    f"with --inputs {cut}")


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
        layers.append(Layer(forward[0], backward[0] if backward else None))
        previous = tuple(c.key for c in group)
    return layers, first_inputs


def head_of(view: GraphView, output: Any, tracer: Tracer, last: Layer) -> tuple[list[tuple[str, Any]], set[str]]:
    """The projection after the last layer: ("matmul", W), ("bias", b), ("activation", name),
    in the order applied, and the ops it consists of."""
    head: list[tuple[str, Any]] = []
    ops: set[str] = set()
    frontier = [output]
    seen: set[str] = set()
    reached: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        if tensor.name in seen or not tensor.dtype.is_floating:
            continue
        seen.add(tensor.name)
        if tensor.name in tracer.step_of:
            reached.add(tracer.step_of[tensor.name][0].key)
            continue
        op = tensor.op
        if op.type in HEAD_ACTIVATIONS and op.outputs[0].dtype.is_floating:
            head.append(("activation", HEAD_ACTIVATIONS[op.type]))
        elif op.type in ADDS and any(view.weight(t) for t in op.inputs):
            variable = next(view.weight(t) for t in op.inputs if view.weight(t))
            head.append(("bias", view.value(variable)))
        elif op.type == "MatMul" and view.weight(op.inputs[1]):
            if op.get_attr("transpose_a") or op.get_attr("transpose_b"):
                raise UnsupportedModelError(f"op '{op.name}': a transposed projection MatMul is not supported")
            head.append(("matmul", view.value(view.weight(op.inputs[1]))))
        elif op.type == "TensorArrayGatherV3":
            frontier.extend(view.written(op))
            continue
        elif op.type in ("Select", "SelectV2"):
            frontier.append(op.inputs[2])
            continue
        elif op.type in ("Placeholder", "VariableV2", "VarHandleOp", "Const"):
            continue
        elif op.type in ("Identity", "Reshape", "Transpose", "ConcatV2", "Pack", "StridedSlice", "Squeeze",
                         "ExpandDims", "Exit", "Switch", "Merge", "Enter", "NextIteration", "ReverseV2",
                         "ReverseSequence", "Select",
                         "SelectV2", "Unpack", "Shape", "Fill", "ZerosLike", "Cast", "Range", "Prod", "GatherV2",
                         "ReadVariableOp"):
            ops.add(op.name)
            frontier.extend(op.inputs)
            continue
        else:
            raise UnsupportedModelError(
                f"op '{op.name}' ({op.type}) lies between the last recurrent layer and the output; rnnexport places "
                "a dense projection (MatMul, bias add) and a Softmax/Sigmoid/Tanh/Relu there")
        ops.add(op.name)
        frontier.extend(op.inputs)
    wanted = {c.key for c in last.cells}
    if reached != wanted:
        raise UnsupportedModelError("the output does not read the last recurrent layer "
                                    f"({', '.join(sorted(wanted))}) alone")
    head.reverse()
    order = [k for k, _ in head]
    if order not in ([], ["matmul"], ["matmul", "bias"], ["matmul", "activation"], ["matmul", "bias", "activation"],
                     ["activation"]):
        raise UnsupportedModelError(f"the projection after the recurrent layers applies {', '.join(order)}; "
                                    "rnnexport places MatMul, then a bias, then an activation")
    return head, ops


def claimed_ops(layers: list[Layer]) -> set[str]:
    ops: set[str] = set()
    for layer in layers:
        for cell in layer.cells:
            for step in cell.steps:
                ops |= step.ops
    return ops


# -- Keras ---------------------------------------------------------------------------------------------


def _lstm_weights(cell: Cell) -> list[np.ndarray]:
    """TF1 (i, j, f, o) on one [input + h, 4u] kernel -> Keras (i, f, c, o), separate kernels."""
    u = cell.units
    order = np.concatenate([np.arange(0, u), np.arange(2 * u, 3 * u), np.arange(u, 2 * u), np.arange(3 * u, 4 * u)])
    kernel = cell.weights["kernel"][:, order]
    bias = cell.weights["bias"][order].copy()
    bias[u:2 * u] += cell.forget_bias
    weights = [kernel[:cell.input_size], kernel[cell.input_size:], bias]
    if cell.peepholes:
        weights.append(np.stack([cell.weights[k] for k in ("w_i_diag", "w_f_diag", "w_o_diag")]))
    if cell.num_proj:
        weights.append(cell.weights["projection"])
    return [w.astype(np.float32) for w in weights]


def _gru_weights(cell: Cell) -> list[np.ndarray]:
    """TF1 gates (r, u) + candidate -> Keras GRU(reset_after=False) (z, r, h); z is TF1's u."""
    u, n = cell.units, cell.input_size
    gates, gate_bias = cell.weights["kernel"], cell.weights["bias"]
    candidate = cell.weights["candidate_kernel"]
    candidate_bias = cell.weights.get("candidate_bias", np.zeros(u, np.float32))
    kernel = np.concatenate([gates[:, u:], gates[:, :u], candidate], axis=1)
    bias = np.concatenate([gate_bias[u:], gate_bias[:u], candidate_bias])
    return [kernel[:n].astype(np.float32), kernel[n:].astype(np.float32), bias.astype(np.float32)]


def standard_lstm(cell: Cell) -> bool:
    return cell.kind == "lstm" and not cell.keras and not (cell.peepholes or cell.num_proj or cell.cell_clip is not None)


def keras_layer(cell: Cell, name: str, return_sequences: bool, go_backwards: bool, masked: bool) -> tuple[Any, list]:
    import keras

    from rnnexport_converters.keras.layers import PeepholeLSTMCell

    common = {"return_sequences": return_sequences, "go_backwards": go_backwards, "name": name}
    if cell.keras:
        kinds = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
        layer = kinds[cell.kind](cell.units, activation=cell.activation, **common)
        weights = [cell.weights[k] for k in ("kernel", "recurrent_kernel", "bias")]
    elif cell.kind == "gru":
        layer = keras.layers.GRU(cell.units, activation=cell.activation, recurrent_activation="sigmoid",
                                 reset_after=False, **common)
        weights = _gru_weights(cell)
    elif cell.kind == "rnn":
        layer = keras.layers.SimpleRNN(cell.units, activation=cell.activation, **common)
        weights = [cell.weights["kernel"][:cell.input_size], cell.weights["kernel"][cell.input_size:],
                   cell.weights["bias"]]
    elif standard_lstm(cell):
        layer = keras.layers.LSTM(cell.units, activation=cell.activation, recurrent_activation="sigmoid", **common)
        weights = _lstm_weights(cell)
    else:
        layer = keras.layers.RNN(
            PeepholeLSTMCell(cell.units, cell.num_proj, cell.peepholes, cell.cell_clip, cell.proj_clip,
                             cell.activation), **common)
        weights = _lstm_weights(cell)
    layer.zero_output_for_mask = masked
    return layer, weights


def _trained_states(cell: Cell, vectors: list[np.ndarray], name: str, x: Any) -> list[Any]:
    """The states a layer starts from, from TF1's (c, h) vectors, in the order its Keras layer takes them."""
    from rnnexport_converters.keras.layers import TrainedState

    roles = dict(zip(("c", "h") if cell.kind == "lstm" else ("h",), vectors))
    order = ("h", "c") if cell.kind == "lstm" and (cell.keras or standard_lstm(cell)) else ("c", "h")
    states = []
    for role in (r for r in order if r in roles):
        layer = TrainedState(roles[role].shape[-1], name=f"{name}_initial_{role}")
        states.append(layer(x))
        layer.set_weights([roles[role]])
    return states


def keras_model(structure: Structure, names: dict[str, str], features: int | None, vocab: int | None,
                last_step: bool, initial: Mapping[int, list[np.ndarray]] = MappingProxyType({})) -> Any:
    """The Keras equivalent of `structure`, taking and returning batch-major tensors. `initial`
    holds, by layer index, the (c, h) or (h,) vectors a layer's forward cell starts from where
    they are not zero."""
    import keras

    from rnnexport_converters.keras.layers import SequenceMask

    if structure.embedding is not None:
        data = keras.Input((None,), dtype="int32", name=names[structure.data_input])
        embed = keras.layers.Embedding(*structure.embedding.shape, name="embedding")
        x = embed(data)
        embed.set_weights([structure.embedding])
    else:
        data = keras.Input((None, features), name=names[structure.data_input])
        x = data
    inputs = [data]
    mask = None
    if structure.lengths_input:
        lengths = keras.Input((), dtype="int32", name=names[structure.lengths_input])
        inputs.append(lengths)
        mask = SequenceMask(name="sequence_mask")([x, lengths])
    for index, layer in enumerate(structure.layers):
        sequences = not (last_step and index == len(structure.layers) - 1)
        # A last step read from masked sequences is the state at each row's true length, as a
        # TF1 final state with sequence_length is.
        forward, weights = keras_layer(layer.forward, f"rnn_{index}", sequences, False,
                                       mask is not None and sequences)
        if layer.backward is None:
            states = _trained_states(layer.forward, initial[index], f"rnn_{index}", x) if index in initial else None
            x = forward(x, mask=mask, initial_state=states)
            forward.set_weights(weights)
            continue
        backward, back_weights = keras_layer(layer.backward, f"rnn_{index}_backward", sequences, True,
                                             mask is not None and sequences)
        bidirectional = keras.layers.Bidirectional(forward, backward_layer=backward, merge_mode="concat",
                                                   name=f"bidirectional_{index}")
        x = bidirectional(x, mask=mask)
        bidirectional.forward_layer.set_weights(weights)
        bidirectional.backward_layer.set_weights(back_weights)
    kernel = next((v for k, v in structure.head if k == "matmul"), None)
    bias = next((v for k, v in structure.head if k == "bias"), None)
    activation = next((v for k, v in structure.head if k == "activation"), None)
    if kernel is not None:
        dense = keras.layers.Dense(kernel.shape[1], activation=activation, use_bias=bias is not None, name="projection")
        x = dense(x)
        dense.set_weights([kernel] + ([bias] if bias is not None else []))
    elif activation is not None:
        x = keras.layers.Activation(activation, name="activation")(x)
    return keras.Model(inputs, x, name="tf1_equivalent")


def to_layout(y: np.ndarray, layout: str) -> np.ndarray:
    """Per-step outputs Y[batch, time, C] in a source output's layout."""
    if layout == "batch-major":
        return y
    if layout == "time-major":
        return np.swapaxes(y, 0, 1)
    if layout == "flat batch-major":
        return y.reshape(-1, *y.shape[2:])
    if layout == "flat time-major":
        return np.swapaxes(y, 0, 1).reshape(-1, *y.shape[2:])
    return y[:, -1]


def from_layout(out: np.ndarray, layout: str, batch: int) -> np.ndarray:
    """A source output back in the export's layout: [batch, time, C], or [batch, C] for the last step."""
    if layout == "batch-major" or layout == "last step":
        return out
    if layout == "time-major":
        return np.swapaxes(out, 0, 1)
    if layout == "flat batch-major":
        return out.reshape(batch, -1, *out.shape[1:])
    return np.swapaxes(out.reshape(-1, batch, *out.shape[1:]), 0, 1)

