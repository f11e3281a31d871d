"""One fused ONNX `LSTM`, `GRU` or `RNN` op per recurrent layer.

The RecurrentModel is traced with each fusable recurrence replaced by a named stub op; the
tf2onnx handler below turns every stub into the fused op, built from the recurrence's weights.
ONNX gate orders: LSTM i, o, f, c (Keras: i, f, c, o); GRU z, r, h (as Keras); peepholes i, o, f
(TF1: i, f, o).

A masked layer gets the fused op's `sequence_lens` (each row's leading unmasked steps), then
Keras's values at the masked steps: the last output repeated where Keras repeats it (ONNX writes
zeros there), the initial state and zero outputs for a row with no step at all. Only a mask
without holes is trailing padding; for one with holes the traced graph chooses the layer's own
loop at run time (an ONNX `If`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport.model import LayerCall, Recurrence
from rnnexport.tf import tensorflow

STUB_PREFIX = "RnnexportFused"
OP_TYPES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
LSTM_GATES_TO_ONNX = (0, 3, 1, 2)
PEEPHOLES_TO_ONNX = (0, 2, 1)
# ONNX activation name, and alpha/beta where the function takes them.
ACTIVATIONS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "tanh": ("Tanh", None),
    "sigmoid": ("Sigmoid", None),
    "relu": ("Relu", None),
    "linear": ("Affine", (1.0, 0.0)),
    "hard_sigmoid": ("HardSigmoid", (1.0 / 6.0, 0.5)),
    "hard_sigmoid_keras2": ("HardSigmoid", (0.2, 0.5)),
}
MASKED = " with sequence_lens; the layer's Loop where a mask has holes (an If chooses)"
NO_PROJECTION = "its projection (TF1 num_proj) has no ONNX LSTM equivalent: it runs as a Loop"
CLIP_DIFFERS = ("ONNX's clip bounds each gate's input, TF1's cell_clip bounds the cell state (a different "
                "function, measured in onnxruntime): it runs as a Loop")


def _unreachable(*_: Any) -> Any:
    raise RuntimeError("an rnnexport fusion stub was executed; it only exists for ONNX conversion")


def _listed(branch: Any) -> Any:
    """A `tf.cond` branch whose several outputs are a list, as the other branch's are."""
    def run() -> Any:
        outputs = branch()
        return list(outputs) if isinstance(outputs, (list, tuple)) else outputs
    return run


def unfusable(recurrence: Recurrence) -> str:
    """Why ONNX's fused ops cannot compute this layer (empty: they can)."""
    if any(d.projection is not None for d in recurrence.directions):
        return NO_PROJECTION
    if recurrence.cell_clip is not None:
        return CLIP_DIFFERS
    return ""


def state_count(recurrence: Recurrence) -> int:
    """States per direction: LSTM h and c, others h."""
    return 2 if recurrence.cell == "lstm" else 1


def _gate_blocks(matrix: np.ndarray, recurrence: Recurrence) -> np.ndarray:
    """Rows of an ONNX weight ([gates*units, ...]) from Keras columns ([..., gates*units])."""
    rows = matrix.T
    if recurrence.cell != "lstm":
        return rows
    blocks = np.split(rows, 4, axis=0)
    return np.concatenate([blocks[i] for i in LSTM_GATES_TO_ONNX], axis=0)


def onnx_weights(recurrence: Recurrence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [dirs, gates*units, features], R [dirs, gates*units, units], B [dirs, 2*gates*units]."""
    w = np.stack([_gate_blocks(d.kernel, recurrence) for d in recurrence.directions])
    r = np.stack([_gate_blocks(d.recurrent_kernel, recurrence) for d in recurrence.directions])
    b = np.stack([
        np.concatenate([_gate_blocks(d.input_bias[None, :], recurrence)[:, 0],
                        _gate_blocks(d.recurrent_bias[None, :], recurrence)[:, 0]])
        for d in recurrence.directions
    ])
    return w.astype(np.float32), r.astype(np.float32), b.astype(np.float32)


def onnx_peepholes(recurrence: Recurrence) -> np.ndarray | None:
    """P [dirs, 3*units] in ONNX's order (i, o, f), or None when no direction has peepholes."""
    if all(d.peepholes is None for d in recurrence.directions):
        return None
    rows = [np.zeros((3, recurrence.units), np.float32) if d.peepholes is None else d.peepholes
            for d in recurrence.directions]
    return np.stack([p[list(PEEPHOLES_TO_ONNX)].reshape(-1) for p in rows]).astype(np.float32)


def activation_attributes(recurrence: Recurrence) -> dict[str, Any]:
    """ONNX activations per direction (LSTM f, g, h; GRU f, g; RNN f), alphas in that order."""
    if recurrence.cell == "lstm":
        names = [recurrence.recurrent_activation, recurrence.activation, recurrence.activation]
    elif recurrence.cell == "gru":
        names = [recurrence.recurrent_activation, recurrence.activation]
    else:
        names = [recurrence.activation]
    names = names * len(recurrence.directions)
    attributes: dict[str, Any] = {"activations": [ACTIVATIONS[n][0] for n in names]}
    params = [ACTIVATIONS[n][1] for n in names if ACTIVATIONS[n][1] is not None]
    if params:
        attributes["activation_alpha"] = [p[0] for p in params]
        attributes["activation_beta"] = [p[1] for p in params]
    return attributes


def output_widths(recurrence: Recurrence) -> list[int]:
    """Feature sizes of what the layer returns: its output (each direction's with merge_mode=None),
    then its states, forward then backward."""
    units = recurrence.units
    if not recurrence.bidirectional:
        outputs = [units]
    elif recurrence.merge_mode is None:
        outputs = [units, units]
    else:
        outputs = [units * 2 if recurrence.merge_mode == "concat" else units]
    states = state_count(recurrence) * len(recurrence.directions) if recurrence.return_state else 0
    return outputs + [units] * states


@dataclass(frozen=True)
class Stub:
    """A fused op to emit: `masked` stubs take the lengths after the input, then `states`
    initial-state tensors (LSTM h, c per direction)."""

    recurrence: Recurrence
    masked: bool
    states: int


class FusedOps:
    """Collects stubs while a RecurrentModel is traced; converts them during tf2onnx's pass."""

    def __init__(self) -> None:
        self.stubs: dict[str, Stub] = {}
        self.nodes: dict[str, str] = {}

    @property
    def fused(self) -> dict[str, str]:
        """The fused op of each layer; for a masked one, also the loop run for masks with holes."""
        return {s.recurrence.name: OP_TYPES[s.recurrence.cell] + (MASKED if s.masked else "")
                for s in self.stubs.values()}

    def __call__(self, recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
        reason = unfusable(recurrence)
        if reason:
            return reason
        if call.mask is None:
            return self._stub(recurrence, inputs, call)
        tf = tensorflow()
        holes = tf.reduce_any(tf.not_equal(tf.reduce_sum(tf.cast(call.mask, tf.int32), axis=1), call.lengths))
        return tf.cond(holes, _listed(call.own), _listed(lambda: self._stub(recurrence, inputs, call)))

    def _stub(self, recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
        tf = tensorflow()
        tag = f"{STUB_PREFIX}{len(self.stubs)}"
        states = list(call.initial_state or ())
        extras = ([call.lengths] if call.lengths is not None else []) + states
        self.stubs[tag] = Stub(recurrence, call.lengths is not None, len(states))
        widths = output_widths(recurrence)
        outputs = tf.numpy_function(_unreachable, [inputs, *extras], Tout=[inputs.dtype] * len(widths),
                                    stateful=False, name=tag)
        sequences = 2 if recurrence.bidirectional and recurrence.merge_mode is None else 1
        for index, (tensor, width) in enumerate(zip(outputs, widths)):
            sequence = index < sequences and recurrence.return_sequences
            tensor.set_shape([None, None, width] if sequence else [None, width])
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def handlers(self) -> dict[str, tuple[Any, list[Any]]]:
        return {op: (self._convert, []) for op in ("PyFunc", "PyFuncStateless")}

    def _convert(self, ctx: Any, node: Any, name: str, args: list[Any]) -> None:
        # The digits in full: a substring test would take stub 1 for stub 10.
        found = re.search(rf"{STUB_PREFIX}(\d+)", name)
        tag = f"{STUB_PREFIX}{found.group(1)}" if found else None
        if tag not in self.stubs:
            raise ValueError(f"unexpected PyFunc node '{name}' in the traced model")
        stub = self.stubs[tag]
        lengths = node.input[1] if stub.masked else None
        states = list(node.input[1 + stub.masked:])
        fused, results = _emit(ctx, node.input[0], stub.recurrence, lengths, states)
        self.nodes[stub.recurrence.name] = fused
        for old, new in zip(node.output, results):
            ctx.copy_shape(old, new)
            ctx.set_dtype(new, ctx.get_dtype(old))
            ctx.replace_all_inputs(old, new)
        ctx.remove_node(node.name)


def _const(ctx: Any, value: Any, dtype: Any = np.int64) -> str:
    from tf2onnx import utils

    return ctx.make_const(utils.make_name("rnnexport"), np.asarray(value, dtype=dtype)).output[0]


def _op(ctx: Any, op_type: str, inputs: list[str], **attributes: Any) -> str:
    return ctx.make_node(op_type, inputs, attr=attributes).output[0]


def _gather(ctx: Any, tensor: str, index: int, axis: int) -> str:
    return _op(ctx, "Gather", [tensor, _const(ctx, index)], axis=axis)


def _reverse_time(ctx: Any, tensor: str) -> str:
    """`tensor` [time, ...] with its steps in reverse order."""
    last = np.iinfo(np.int64).min
    return _op(ctx, "Slice", [tensor, _const(ctx, [-1]), _const(ctx, [last]), _const(ctx, [0]), _const(ctx, [-1])])


def _initial(ctx: Any, states: list[str], role: int, per_direction: int) -> str:
    """The fused op's initial_h (role 0) or initial_c (role 1): [dirs, batch, units]."""
    given = states[role::per_direction]
    stacked = [_op(ctx, "Unsqueeze", [s, _const(ctx, [0])]) for s in given]
    return stacked[0] if len(stacked) == 1 else _op(ctx, "Concat", stacked, axis=0)


class _Masked:
    """Keras's values at masked steps, from a fused op run with `sequence_lens`."""

    def __init__(self, ctx: Any, time_major: str, lengths: str) -> None:
        self.ctx = ctx
        steps = _op(ctx, "Range", [_const(ctx, 0, np.int32),
                                   _op(ctx, "Cast", [_gather(ctx, _op(ctx, "Shape", [time_major]), 0, 0)], to=6),
                                   _const(ctx, 1, np.int32)])
        # valid [time, batch, 1]: step t of row b is one of its leading unmasked steps.
        self.valid = _op(ctx, "Unsqueeze", [_op(ctx, "Less", [_op(ctx, "Unsqueeze", [steps, _const(ctx, [1])]),
                                                              _op(ctx, "Unsqueeze", [lengths, _const(ctx, [0])])]),
                                            _const(ctx, [2])])
        # nonempty [batch, 1]: the row has a step at all.
        self.nonempty = _op(ctx, "Unsqueeze", [_op(ctx, "Greater", [lengths, _const(ctx, 0, np.int32)]),
                                               _const(ctx, [1])])
        # The fused op is given at least one step per row; a row with none is put right after.
        self.sequence_lens = _op(ctx, "Max", [lengths, _const(ctx, 1, np.int32)])
        self.zero = _const(ctx, 0.0, np.float32)

    def state(self, final: str, initial: str | None) -> str:
        return _op(self.ctx, "Where", [self.nonempty, final, initial or self.zero])

    def last_output(self, final: str) -> str:
        return _op(self.ctx, "Where", [self.nonempty, final, self.zero])

    def sequence(self, steps: str, fill: str | None) -> str:
        return _op(self.ctx, "Where", [self.valid, steps, fill or self.zero])


def _emit(ctx: Any, x: str, recurrence: Recurrence, lengths: str | None,
          states: list[str]) -> tuple[str, list[str]]:
    """Build the fused op on batch-major `x`; return its name and the layer's outputs, batch-major."""
    w, r, b = onnx_weights(recurrence)
    peepholes = onnx_peepholes(recurrence)
    time_major = _op(ctx, "Transpose", [x], perm=[1, 0, 2])
    per_direction = state_count(recurrence)
    directions = len(recurrence.directions)
    masked = _Masked(ctx, time_major, lengths) if lengths is not None else None
    attributes = {
        "hidden_size": recurrence.units,
        "direction": "bidirectional" if directions == 2 else "reverse" if recurrence.go_backwards else "forward",
        **activation_attributes(recurrence),
    }
    if recurrence.cell == "gru":
        attributes["linear_before_reset"] = int(recurrence.reset_after)
    inputs = [time_major, _const(ctx, w, np.float32), _const(ctx, r, np.float32), _const(ctx, b, np.float32),
              masked.sequence_lens if masked else ""]
    inputs += [_initial(ctx, states, role, per_direction) for role in range(per_direction)] if states else \
        [""] * per_direction
    if recurrence.cell == "lstm" and peepholes is not None:
        inputs.append(_const(ctx, peepholes, np.float32))
    while inputs[-1] == "":
        inputs.pop()
    fused = ctx.make_node(OP_TYPES[recurrence.cell], inputs, attr=attributes, output_count=1 + per_direction,
                          name=f"{recurrence.name}_{OP_TYPES[recurrence.cell]}")
    outputs, finals = [], []
    for d in range(directions):
        given = states[d * per_direction:(d + 1) * per_direction] if states else [None] * per_direction
        final = [_gather(ctx, fused.output[1 + role], d, 0) for role in range(per_direction)]
        if masked:
            final = [masked.state(f, g) for f, g in zip(final, given)]
        finals += final
        backwards = d == 1 or recurrence.go_backwards
        if not recurrence.return_sequences:
            outputs.append(masked.last_output(final[0]) if masked else final[0])
            continue
        steps = _gather(ctx, fused.output[0], d, 1)  # Y is [time, directions, batch, units]
        if masked:
            repeats = not backwards and not recurrence.zero_output_for_mask
            fill = _op(ctx, "Unsqueeze", [masked.last_output(final[0]), _const(ctx, [0])]) if repeats else None
            steps = masked.sequence(steps, fill)
        if recurrence.go_backwards:
            steps = _reverse_time(ctx, steps)
        outputs.append(_op(ctx, "Transpose", [steps], perm=[1, 0, 2]))
    if directions == 2 and recurrence.merge_mode is not None:
        outputs = [_merge(ctx, outputs, recurrence.merge_mode)]
    return fused.name, outputs + (finals if recurrence.return_state else [])


def _merge(ctx: Any, directions: list[str], mode: str) -> str:
    """Combine the forward and backward outputs as Keras's `merge_mode` does."""
    if mode == "concat":
        return _op(ctx, "Concat", directions, axis=-1)
    if mode == "mul":
        return _op(ctx, "Mul", directions)
    total = _op(ctx, "Add", directions)
    return total if mode == "sum" else _op(ctx, "Mul", [total, _const(ctx, 0.5, np.float32)])
