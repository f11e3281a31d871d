"""TF1 `BasicLSTMCell` and `LSTMCell` (peepholes, projection, clipped cell and projected states).

One kernel [input + h, 4u] in gate order i, j (new input), f, o; the forget bias is a constant
added at run time. A standard cell becomes a Keras LSTM, any other a `PeepholeLSTMCell` RNN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Cell, Step, Tf1Match
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, IDENTITY_LIKE, GraphView

log = logging.getLogger(__name__)

PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")


@dataclass(frozen=True, kw_only=True)
class LstmMatch(Tf1Match):
    kind = "lstm"
    title = "LSTM"
    gates = 4

    forget_bias: float
    cell_clip: float | None
    proj_clip: float | None
    projection: str | None
    peepholes: tuple[str | None, str | None, str | None]

    def _named(self) -> dict[str, str | None]:
        return {**super()._named(), "projection": self.projection, **dict(zip(PEEPHOLES, self.peepholes))}

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "forget_bias": self.forget_bias, "cell_clip": self.cell_clip,
                "proj_clip": self.proj_clip}

    def _read_more(self, view: GraphView, units: int, weights: dict[str, np.ndarray]) -> int:
        if any(self.peepholes):
            for role, variable in zip(PEEPHOLES, self.peepholes):
                weights[role] = view.value(variable) if variable else np.zeros(units, np.float32)
        if self.projection:
            weights["projection"] = view.value(self.projection)
            return int(weights["projection"].shape[1])
        return units

    def num_proj(self, cell: Cell) -> int | None:
        return cell.output_size if self.projection else None

    def has_peepholes(self) -> bool:
        return any(self.peepholes)

    def standard(self, cell: Cell) -> bool:
        """True when Keras's own LSTM computes this cell."""
        return not (self.has_peepholes() or self.num_proj(cell) or self.cell_clip is not None)

    def details(self, cell: Cell) -> list[str]:
        parts = [f"forget_bias={self.forget_bias:g}", *super().details(cell)]
        if self.has_peepholes():
            parts.append("peepholes")
        if self.num_proj(cell):
            parts.append(f"num_proj={self.num_proj(cell)}")
        if self.cell_clip is not None:
            parts.append(f"cell_clip={self.cell_clip:g}")
        if self.proj_clip is not None:
            parts.append(f"proj_clip={self.proj_clip:g}")
        return parts

    def keras_weights(self, cell: Cell) -> list[np.ndarray]:
        """TF1 (i, j, f, o) on one [input + h, 4u] kernel -> Keras (i, f, c, o), separate kernels."""
        u = cell.units
        order = np.concatenate([np.arange(0, u), np.arange(2 * u, 3 * u), np.arange(u, 2 * u),
                                np.arange(3 * u, 4 * u)])
        kernel = cell.weights["kernel"][:, order]
        bias = cell.weights["bias"][order].copy()
        bias[u:2 * u] += self.forget_bias
        weights = [kernel[:cell.input_size], kernel[cell.input_size:], bias]
        if self.has_peepholes():
            weights.append(np.stack([cell.weights[k] for k in PEEPHOLES]))
        if self.num_proj(cell):
            weights.append(cell.weights["projection"])
        return [w.astype(np.float32) for w in weights]

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        import keras

        from rnnexport_converters.keras.layers import PeepholeLSTMCell

        if self.standard(cell):
            layer = keras.layers.LSTM(cell.units, activation=cell.activation, recurrent_activation="sigmoid",
                                      **common)
        else:
            layer = keras.layers.RNN(
                PeepholeLSTMCell(cell.units, self.num_proj(cell), self.has_peepholes(), self.cell_clip,
                                 self.proj_clip, cell.activation), **common)
        return layer, self.keras_weights(cell)

    def keras_state_order(self, cell: Cell) -> tuple[str, ...]:
        return ("h", "c") if self.standard(cell) else ("c", "h")


def _state_width(h_prev: Any) -> int | None:
    """The width of the state a step reads. Inside a frozen loop the state's shape is unknown;
    the loop variable's initial value (the zero state) still has it."""
    tensor = h_prev
    while tensor.shape.rank is None or tensor.shape[-1] is None:
        if tensor.op.type not in IDENTITY_LIKE | {"Switch", "Merge"} or not tensor.op.inputs:
            return None
        tensor = tensor.op.inputs[0]
    return int(tensor.shape[-1])


def match(view: GraphView, op: Any, known: Sequence[str]) -> LstmMatch | None:
    start = patterns.kernel_matmul(view, op)
    if start is None:
        return None
    splits = [u for u in view.users(start.gates) if u.type == "Split" and len(u.outputs) == 4]
    if not splits:
        log.debug("op '%s': its gates are not split four ways, so it is no TF1 LSTM's kernel", op.name)
        return None
    split, concat, ops = splits[0], start.concat, set(start.ops) | {splits[0].name}
    i, j, f, o = split.outputs
    sig_i, _, peep_i, _ = patterns.gate(view, i, ops)
    sig_f, forget_bias, peep_f, c_prev = patterns.gate(view, f, ops)
    act_j = patterns.only([u for u in view.users(j) if u.type in ACTIVATIONS or u.type == "Identity"],
                          "cell input", split)
    ops.add(act_j.name)
    keep = patterns.only(view.users(sig_f.outputs[0], {"Mul"}), "forget gate product", sig_f)
    c_prev = patterns.other(keep, sig_f.outputs[0]) if c_prev is None else c_prev
    write = patterns.only(view.users(sig_i.outputs[0], {"Mul"}), "input gate product", sig_i)
    new_c = patterns.only(view.users(write.outputs[0], ADDS), "cell state", write)
    ops.update({keep.name, write.name, new_c.name})
    c_out, cell_clip = patterns.clip_after(view, new_c.outputs[0], ops)
    sig_o, _, peep_o, _ = patterns.gate(view, o, ops)
    act_c = patterns.only([u for u in view.users(c_out) if u.type == act_j.type], "cell output activation", c_out.op)
    m = patterns.only(view.users(sig_o.outputs[0], {"Mul"}), "output gate product", sig_o)
    ops.update({act_c.name, m.name})
    output, projection, proj_clip = m.outputs[0], None, None
    # Only a projected cell feeds back a state narrower than its units; any other MatMul of the
    # output is whatever follows the cell.
    units = split.outputs[0].shape[-1]
    projected = _state_width(concat.inputs[1]) not in (None, units)
    projections = [u for u in view.users(output, {"MatMul"}) if view.weight(u.inputs[1])] if projected else []
    if projections:
        ops.add(projections[0].name)
        projection = view.weight(projections[0].inputs[1])
        output, proj_clip = patterns.clip_after(view, projections[0].outputs[0], ops)
    h_prev = concat.inputs[1]
    step = Step(concat.inputs[0].name, (c_prev.name, h_prev.name), (c_out.name, output.name), output.name,
                frozenset(ops))
    return LstmMatch(kernel=start.kernel, activation=patterns.activation(act_j), step=step, bias=start.bias,
                     forget_bias=forget_bias, cell_clip=cell_clip, proj_clip=proj_clip, projection=projection,
                     peepholes=(peep_i, peep_f, peep_o))
