"""A Keras LSTM as traced: z = x.W + h.U (+ b) split four ways (i, f, c, o)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Step
from rnnexport_converters.tf1.cells.keras_traced import KerasMatch
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView
from rnnexport.errors import UnsupportedModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KerasLstmMatch(KerasMatch):
    kind = "lstm"
    title = "keras LSTM"
    layer = "LSTM"


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasLstmMatch | None:
    if op.type != "Split" or len(op.outputs) != 4:
        return None
    split, ops = op, {op.name}
    terms = patterns.terms(view, split.inputs[1], ops)
    if terms is None or len(terms[0]) != 2 or len(terms[1]) > 1:
        log.debug("op '%s': what it splits is not x.W + h.U (+ b), so it is no Keras LSTM's gates", op.name)
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
    act = patterns.only([u for u in view.users(g) if u.type in ACTIVATIONS], "cell input activation", split)
    keep = patterns.only(view.users(gates[1].outputs[0], {"Mul"}), "forget gate product", gates[1])
    write = patterns.only(view.users(gates[0].outputs[0], {"Mul"}), "input gate product", gates[0])
    new_c = patterns.only(view.users(write.outputs[0], ADDS), "cell state", write)
    act_c = patterns.only([u for u in view.users(new_c.outputs[0]) if u.type == act.type], "cell output activation",
                          new_c)
    h = patterns.only(view.users(gates[2].outputs[0], {"Mul"}), "output gate product", gates[2])
    ops.update(each.name for each in (*gates, act, keep, write, new_c, act_c, h))
    c_prev = patterns.other(keep, gates[1].outputs[0])
    x_mm, h_mm = patterns.input_and_recurrent(view, matmuls, int(g.shape[-1]), list(known))
    step = Step(x_mm.inputs[0].name, (c_prev.name, h_mm.inputs[0].name), (new_c.outputs[0].name, h.outputs[0].name),
                h.outputs[0].name, frozenset(ops))
    return KerasLstmMatch(kernel=view.weight(x_mm.inputs[1]), activation=patterns.activation(act), step=step,
                          recurrent_kernel=view.weight(h_mm.inputs[1]), biases=tuple(biases))
