"""One fused ONNX `LSTM`, `GRU` or `RNN` op per recurrent layer.

The RecurrentModel is traced with each fusable recurrence replaced by a named stub op; the
tf2onnx handler below turns every stub into the fused op, built from the recurrence's weights.
ONNX gate orders: LSTM i, o, f, c (Keras: i, f, c, o); GRU z, r, h (as Keras).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rnnexport.model import LayerCall, Recurrence
from rnnexport.tf import tensorflow

STUB_PREFIX = "RnnexportFused"
OP_TYPES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
LSTM_GATES_TO_ONNX = (0, 3, 1, 2)
# ONNX activation name, and alpha/beta where the function takes them.
ACTIVATIONS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "tanh": ("Tanh", None),
    "sigmoid": ("Sigmoid", None),
    "relu": ("Relu", None),
    "linear": ("Affine", (1.0, 0.0)),
    "hard_sigmoid": ("HardSigmoid", (1.0 / 6.0, 0.5)),
    "hard_sigmoid_keras2": ("HardSigmoid", (0.2, 0.5)),
}


def _unreachable(*_: Any) -> Any:
    raise RuntimeError("an rnnexport fusion stub was executed; it only exists for ONNX conversion")


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
    """Feature sizes of what the layer returns: the output, then its states."""
    units = recurrence.units
    width = units * 2 if recurrence.bidirectional and recurrence.merge_mode == "concat" else units
    states = 0
    if recurrence.return_state:
        states = 2 if recurrence.cell == "lstm" else 1
    return [width] + [units] * states


def _not_yet_fused(recurrence: Recurrence, call: LayerCall) -> str:
    if call.mask is not None:
        return "its input is masked: a fused op only models trailing padding, the loop keeps Keras's masking exactly"
    if call.initial_state is not None:
        return "it is given an initial state"
    if recurrence.go_backwards:
        return "go_backwards=True returns the outputs in reverse order"
    if recurrence.bidirectional and recurrence.merge_mode is None:
        return "merge_mode=None returns the directions separately"
    if recurrence.bidirectional and recurrence.return_state:
        return "a bidirectional layer with return_state"
    return ""


class FusedOps:
    """Collects stubs while a RecurrentModel is traced; converts them during tf2onnx's pass."""

    def __init__(self) -> None:
        self.stubs: dict[str, Recurrence] = {}

    @property
    def fused(self) -> dict[str, str]:
        return {r.name: OP_TYPES[r.cell] for r in self.stubs.values()}

    def stub(self, recurrence: Recurrence, inputs: Any, call: LayerCall) -> Any:
        reason = _not_yet_fused(recurrence, call)
        if reason:
            return reason
        tf = tensorflow()
        tag = f"{STUB_PREFIX}{len(self.stubs)}"
        self.stubs[tag] = recurrence
        widths = output_widths(recurrence)
        outputs = tf.numpy_function(_unreachable, [inputs], Tout=[inputs.dtype] * len(widths), stateful=False,
                                    name=tag)
        for index, (tensor, width) in enumerate(zip(outputs, widths)):
            tensor.set_shape([None, None, width] if index == 0 and recurrence.return_sequences else [None, width])
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def handlers(self) -> dict[str, tuple[Any, list[Any]]]:
        return {op: (self._convert, []) for op in ("PyFunc", "PyFuncStateless")}

    def _convert(self, ctx: Any, node: Any, name: str, args: list[Any]) -> None:
        # The digits in full: a substring test would take stub 1 for stub 10.
        found = re.search(rf"{STUB_PREFIX}(\d+)", name)
        tag = f"{STUB_PREFIX}{found.group(1)}" if found else None
        if tag not in self.stubs:
            raise ValueError(f"unexpected PyFunc node '{name}' in the traced model")
        recurrence = self.stubs[tag]
        results = _emit(ctx, node.input[0], recurrence)
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


def _merge(ctx: Any, stacked: str, axis: int, mode: str) -> str:
    """Combine the two directions stacked on `axis` (sum, mul or ave), dropping that axis."""
    forward = _op(ctx, "Gather", [stacked, _const(ctx, 0)], axis=axis)
    backward = _op(ctx, "Gather", [stacked, _const(ctx, 1)], axis=axis)
    if mode == "mul":
        return _op(ctx, "Mul", [forward, backward])
    total = _op(ctx, "Add", [forward, backward])
    return total if mode == "sum" else _op(ctx, "Mul", [total, _const(ctx, 0.5, np.float32)])


def _emit(ctx: Any, x: str, recurrence: Recurrence) -> list[str]:
    """Build the fused op on batch-major `x`; return the layer's outputs, batch-major."""
    w, r, b = onnx_weights(recurrence)
    time_major = _op(ctx, "Transpose", [x], perm=[1, 0, 2])
    count = 3 if recurrence.cell == "lstm" else 2
    attributes = {
        "hidden_size": recurrence.units,
        "direction": "bidirectional" if recurrence.bidirectional else "forward",
        **activation_attributes(recurrence),
    }
    if recurrence.cell == "gru":
        attributes["linear_before_reset"] = int(recurrence.reset_after)
    fused = ctx.make_node(
        OP_TYPES[recurrence.cell],
        [time_major, _const(ctx, w, np.float32), _const(ctx, r, np.float32), _const(ctx, b, np.float32)],
        attr=attributes, output_count=count, name=f"{recurrence.name}_{OP_TYPES[recurrence.cell]}",
    )
    y, y_h = fused.output[0], fused.output[1]
    directions = 2 if recurrence.bidirectional else 1
    if recurrence.return_sequences:
        # Y is [time, directions, batch, units].
        if directions == 1:
            out = _op(ctx, "Transpose", [_op(ctx, "Gather", [y, _const(ctx, 0)], axis=1)], perm=[1, 0, 2])
        elif recurrence.merge_mode == "concat":
            out = _op(ctx, "Reshape", [_op(ctx, "Transpose", [y], perm=[2, 0, 1, 3]), _const(ctx, [0, 0, -1])])
        else:
            out = _op(ctx, "Transpose", [_merge(ctx, y, 1, recurrence.merge_mode)], perm=[1, 0, 2])
    elif directions == 1:
        out = _op(ctx, "Gather", [y_h, _const(ctx, 0)], axis=0)
    elif recurrence.merge_mode == "concat":
        out = _op(ctx, "Reshape", [_op(ctx, "Transpose", [y_h], perm=[1, 0, 2]), _const(ctx, [0, -1])])
    else:
        out = _merge(ctx, y_h, 0, recurrence.merge_mode)
    outputs = [out]
    if recurrence.return_state:
        outputs += [_op(ctx, "Gather", [state, _const(ctx, 0)], axis=0) for state in fused.output[1:count]]
    return outputs
