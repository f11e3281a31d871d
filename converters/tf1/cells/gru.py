"""TF1 `GRUCell`: a gates kernel [input + h, 2u] (r, u) and a candidate kernel over
concat([x, r * h]); Keras's GRU with `reset_after=False` computes it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Cell, Step, Tf1Match
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GruMatch(Tf1Match):
    kind = "gru"
    title = "GRUCell"
    gates = 2

    candidate: str | None
    candidate_bias: str | None

    def _named(self) -> dict[str, str | None]:
        return {**super()._named(), "candidate_kernel": self.candidate, "candidate_bias": self.candidate_bias}

    def _read_more(self, view: GraphView, units: int, weights: dict[str, np.ndarray]) -> int:
        weights["candidate_kernel"] = view.value(self.candidate)
        if self.candidate_bias:
            weights["candidate_bias"] = view.value(self.candidate_bias)
        return units

    def scope(self, cell: Cell) -> str:
        scope = super().scope(cell)
        return scope[: -len("/gates")] if scope.endswith("/gates") else scope

    def keras_weights(self, cell: Cell) -> list[np.ndarray]:
        """TF1 gates (r, u) + candidate -> Keras GRU(reset_after=False) (z, r, h); z is TF1's u."""
        u, n = cell.units, cell.input_size
        gates, gate_bias = cell.weights["kernel"], cell.weights["bias"]
        candidate = cell.weights["candidate_kernel"]
        candidate_bias = cell.weights.get("candidate_bias", np.zeros(u, np.float32))
        kernel = np.concatenate([gates[:, u:], gates[:, :u], candidate], axis=1)
        bias = np.concatenate([gate_bias[u:], gate_bias[:u], candidate_bias])
        return [kernel[:n].astype(np.float32), kernel[n:].astype(np.float32), bias.astype(np.float32)]

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        import keras

        layer = keras.layers.GRU(cell.units, activation=cell.activation, recurrent_activation="sigmoid",
                                 reset_after=False, **common)
        return layer, self.keras_weights(cell)


def match(view: GraphView, op: Any, known: Sequence[str]) -> GruMatch | None:
    start = patterns.kernel_matmul(view, op)
    if start is None:
        return None
    sigmoid = [u for u in view.users(start.gates) if u.type == "Sigmoid"]
    splits = [u for s in sigmoid for u in view.users(s.outputs[0], {"Split"}) if len(u.outputs) == 2]
    if not splits:
        log.debug("op '%s': no sigmoid split in two after it, so it is no TF1 GRU's gates kernel", op.name)
        return None
    split, concat, ops = splits[0], start.concat, set(start.ops) | {sigmoid[0].name, splits[0].name}
    r, u = split.outputs
    h_prev = concat.inputs[1]
    reset = patterns.only(view.users(r, {"Mul"}), "reset gate product", split)
    concat2 = patterns.only(view.users(reset.outputs[0], {"ConcatV2"}), "candidate input", reset)
    matmul = patterns.only(view.users(concat2.outputs[0], {"MatMul"}), "candidate kernel", concat2)
    candidate, bias = patterns.bias_after(view, matmul.outputs[0], ops)
    act = patterns.only([o for o in view.users(candidate) if o.type in ACTIVATIONS], "candidate activation",
                        candidate.op)
    ops.update({reset.name, concat2.name, matmul.name, act.name})
    mix = patterns.only(view.users(act.outputs[0], {"Mul"}), "candidate product", act)
    new_h = patterns.only(view.users(mix.outputs[0], ADDS), "new state", mix)
    keep = patterns.other(new_h, mix.outputs[0]).op
    ops.update({mix.name, new_h.name, keep.name})
    ops.update(o.name for o in view.users(u, {"Sub"}))
    out = new_h.outputs[0]
    step = Step(concat.inputs[0].name, (h_prev.name,), (out.name,), out.name, frozenset(ops))
    return GruMatch(kernel=start.kernel, activation=patterns.activation(act), step=step, bias=start.bias,
                    candidate=view.weight(matmul.inputs[1]), candidate_bias=bias)
