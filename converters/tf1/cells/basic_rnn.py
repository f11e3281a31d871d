"""TF1 `BasicRNNCell`: h = activation(concat([x, h]) . kernel + bias), Keras's SimpleRNN."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns
from rnnexport_converters.tf1.cells.base import Cell, Step, Tf1Match
from rnnexport_converters.tf1.graph import ACTIVATIONS, GraphView

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BasicRnnMatch(Tf1Match):
    kind = "rnn"
    title = "BasicRNNCell"
    gates = 1

    def keras_layer(self, cell: Cell, common: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
        import keras

        layer = keras.layers.SimpleRNN(cell.units, activation=cell.activation, **common)
        kernel = cell.weights["kernel"]
        return layer, [kernel[:cell.input_size], kernel[cell.input_size:], cell.weights["bias"]]


def match(view: GraphView, op: Any, known: Sequence[str]) -> BasicRnnMatch | None:
    start = patterns.kernel_matmul(view, op)
    if start is None:
        return None
    concat = start.concat
    state = concat.inputs[1].op
    if state.type == "Mul" and any(t.op.type == "Split" for t in state.inputs):
        log.debug("op '%s' is a GRU's candidate MatMul, claimed with its gates", op.name)
        return None
    act = [u for u in view.users(start.gates) if u.type in ACTIVATIONS]
    if len(act) != 1:
        log.debug("op '%s': no single activation after it, so it is no TF1 BasicRNNCell's kernel", op.name)
        return None
    out = act[0].outputs[0]
    step = Step(concat.inputs[0].name, (concat.inputs[1].name,), (out.name,), out.name,
                frozenset(start.ops | {act[0].name}))
    return BasicRnnMatch(kernel=start.kernel, activation=patterns.activation(act[0]), step=step, bias=start.bias)
