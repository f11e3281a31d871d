"""A Keras SimpleRNN as traced: h = activation(x.W + h.U (+ b))."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnexport_converters.tf1.cells import patterns, traced
from rnnexport_converters.tf1.cells.base import Step
from rnnexport_converters.tf1.cells.keras_traced import KerasMatch
from rnnexport_converters.tf1.graph import ACTIVATIONS, GraphView

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KerasRnnMatch(KerasMatch):
    kind = "rnn"
    title = "keras SimpleRNN"
    layer = "SimpleRNN"

    def keras_options(self) -> dict[str, Any]:
        return {}


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasRnnMatch | None:
    # A Sigmoid is a Keras GRU's update gate, read by that pattern alone.
    if op.type not in ACTIVATIONS or op.type in ("Identity", "Sigmoid"):
        return None
    ops = {op.name}
    terms = patterns.terms(view, op.inputs[0], ops)
    if terms is None or len(terms[0]) != 2 or len(terms[1]) > 1:
        log.debug("op '%s': its input is not x.W + h.U (+ b), so it is no Keras SimpleRNN's step", op.name)
        return None
    out = op.outputs[0]
    # An LSTM's candidate or a GRU's (reset_after=False) is the same sum, but the state it reads is
    # not its own output: the LSTM carries o * act(c) on, the GRU multiplies r * h first.
    states = [m.inputs[0] for m in terms[0]]
    following = [traced.carried(view, t) for t in states]
    if any(f is not None and f.name != out.name for f in following) or any(
            view.through(t).op.type == "Mul" for t in states):
        log.debug("op '%s': the state its MatMul reads is not its own output, so it is no SimpleRNN step", op.name)
        return None
    x_mm, h_mm = patterns.input_and_recurrent(view, terms[0], int(out.shape[-1]), list(known))
    ops |= traced.initial_ops([h_mm.inputs[0]])
    step = Step(x_mm.inputs[0].name, (h_mm.inputs[0].name,), (out.name,), out.name, frozenset(ops))
    return KerasRnnMatch(kernel=traced.weight(view, x_mm.inputs[1]), activation=patterns.activation(op), step=step,
                         recurrent_kernel=traced.weight(view, h_mm.inputs[1]), biases=tuple(terms[1]))
