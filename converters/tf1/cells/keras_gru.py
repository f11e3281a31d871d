"""A Keras GRU (reset_after=True) as traced, from its update gate z = sigmoid(x_z + r_z): x.W and
h.U (each with a bias) are sliced into gates, and the reset gate multiplies h.U's candidate part."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Step
from rnnexport_converters.tf1.cells.keras_traced import KerasMatch
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView
from rnnexport.errors import UnsupportedModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KerasGruMatch(KerasMatch):
    kind = "gru"
    title = "keras GRU"
    layer = "GRU"

    def _bias(self, biases: list[np.ndarray], kernel: np.ndarray) -> np.ndarray:
        return np.stack(biases)  # input and recurrent biases, as Keras keeps them with reset_after


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasGruMatch | None:
    if op.type != "Sigmoid":
        return None
    z = op
    add = z.inputs[0].op
    sub = view.users(z.outputs[0], {"Sub"})
    parts = [t for t in add.inputs if t.op.type in ("Split", "StridedSlice")] if add.type in ADDS else []
    if len(sub) != 1 or len(parts) != 2:
        log.debug("op '%s': not the sigmoid of two gate slices that a Keras GRU's update gate is", op.name)
        return None
    ops = {z.name, add.name, sub[0].name}
    blend = patterns.only([u for u in view.users(z.outputs[0], {"Mul"})], "update gate product", z)
    h_prev = patterns.other(blend, z.outputs[0])
    mix = patterns.only(view.users(sub[0].outputs[0], {"Mul"}), "candidate product", sub[0])
    act = patterns.other(mix, sub[0].outputs[0]).op
    new_h = patterns.only(view.users(mix.outputs[0], ADDS), "new state", mix)
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
        terms = patterns.terms(view, source, ops)
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
    x_mm, h_mm = x_side[0][0], h_side[0][0]
    step = Step(x_mm.inputs[0].name, (h_prev.name,), (out.name,), out.name, frozenset(ops))
    return KerasGruMatch(kernel=view.weight(x_mm.inputs[1]), activation=patterns.activation(act), step=step,
                         recurrent_kernel=view.weight(h_mm.inputs[1]), biases=tuple(biases))
