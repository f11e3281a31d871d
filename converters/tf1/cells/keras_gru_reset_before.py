"""A Keras GRU with reset_after=False as traced (tf.keras 2 and Keras 3 GRUCell): x.W + b sliced
into (z, r, h) parts, h.U[:, :2u] sliced into (z, r), and the candidate's recurrent term
(r * h).U[:, 2u:], so the reset gate applies before the recurrent MatMul."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Cell, Step
from rnnexport_converters.tf1.cells.keras_traced import KerasMatch
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView
from rnnexport.errors import UnsupportedModelError

log = logging.getLogger(__name__)

# How a traced GRU cuts its gate MatMuls into gates: tf.split (Split, SplitV) or slicing.
SLICES = {"Split": 1, "SplitV": 0, "StridedSlice": 0}


@dataclass(frozen=True, kw_only=True)
class KerasGruResetBeforeMatch(KerasMatch):
    kind = "gru"
    title = "keras GRU"
    layer = "GRU"

    candidate_kernel: str

    def weights(self) -> dict[str, str]:
        return {**super().weights(), "candidate_kernel": self.candidate_kernel}

    def details(self, cell: Cell) -> list[str]:
        return [*super().details(cell), "reset_after=False"]

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        kernel = view.value(self.kernel)
        recurrent = np.concatenate([view.value(self.recurrent_kernel), view.value(self.candidate_kernel)], axis=1)
        units = recurrent.shape[0]
        bias = view.value(self.biases[0]) if self.biases else np.zeros(kernel.shape[1], np.float32)
        weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
        return Cell(key, units, kernel.shape[0], units, weights, self, tuple(steps))

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        import keras

        layer = keras.layers.GRU(cell.units, activation=cell.activation, reset_after=False, **common)
        return layer, [cell.weights[k] for k in ("kernel", "recurrent_kernel", "bias")]


def _source(part: Any) -> Any:
    return part.op.inputs[SLICES[part.op.type]]


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasGruResetBeforeMatch | None:
    if op.type != "Sigmoid":
        return None
    z = op
    add = z.inputs[0].op
    sub = view.users(z.outputs[0], {"Sub"})
    parts = [t for t in add.inputs if t.op.type in SLICES] if add.type in ADDS else []
    blend = view.users(z.outputs[0], {"Mul"})
    mix = view.users(sub[0].outputs[0], {"Mul"}) if len(sub) == 1 else []
    if len(parts) != 2 or len(blend) != 1 or len(mix) != 1:
        log.debug("op '%s': not the sigmoid of two gate slices that a Keras GRU's update gate is", op.name)
        return None
    h_prev = patterns.other(blend[0], z.outputs[0])
    act = patterns.other(mix[0], sub[0].outputs[0]).op
    inner = act.inputs[0].op if act.inputs else act
    candidate = [t.op for t in inner.inputs if t.op.type == "MatMul"] if inner.type in ADDS else []
    reset = candidate[0].inputs[0].op if len(candidate) == 1 else None
    if (act.type not in ACTIVATIONS or reset is None or reset.type != "Mul"
            or view.weight(candidate[0].inputs[1]) is None):
        log.debug("op '%s': the GRU candidate does not multiply (r * h) by a weight, so not reset_after=False", op.name)
        return None
    r = next((t.op for t in reset.inputs if t.op.type == "Sigmoid"), None)
    if r is None or patterns.other(reset, r.outputs[0]).name != h_prev.name:
        raise UnsupportedModelError(f"op '{reset.name}' does not apply a GRU's reset gate to its state")
    new_h = patterns.only(view.users(mix[0].outputs[0], ADDS), "new state", mix[0])
    ops = {z.name, add.name, sub[0].name, blend[0].name, mix[0].name, act.name, inner.name, candidate[0].name,
           reset.name, r.name, r.inputs[0].op.name, new_h.name}
    sides = []
    for part in parts:
        ops.add(part.op.name)
        terms = patterns.terms(view, _source(part), ops)
        if terms is None or len(terms[0]) != 1 or len(terms[1]) > 1:
            raise UnsupportedModelError(f"op '{part.op.name}' does not slice one MatMul (and a bias) into GRU gates")
        sides.append(terms)
    x_side, h_side = sides if sides[1][0][0].inputs[0].name == h_prev.name else sides[::-1]
    if h_side[0][0].inputs[0].name != h_prev.name or h_side[1]:
        raise UnsupportedModelError(f"op '{add.name}': the GRU update gate does not add x.W (+ b) and h.U")
    x_part = patterns.other(inner, candidate[0].outputs[0])
    if x_part.op.type not in SLICES or _source(x_part).name != _source(parts[0 if sides[0] is x_side else 1]).name:
        raise UnsupportedModelError(f"op '{inner.name}': the GRU candidate does not read the input's third part")
    ops.add(x_part.op.name)
    x_mm, h_mm = x_side[0][0], h_side[0][0]
    out = new_h.outputs[0]
    step = Step(x_mm.inputs[0].name, (h_prev.name,), (out.name,), out.name, frozenset(ops))
    return KerasGruResetBeforeMatch(kernel=view.weight(x_mm.inputs[1]), activation=patterns.activation(act),
                                    step=step, recurrent_kernel=view.weight(h_mm.inputs[1]), biases=tuple(x_side[1]),
                                    candidate_kernel=view.weight(candidate[0].inputs[1]))
