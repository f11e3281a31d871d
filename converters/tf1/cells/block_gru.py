"""TF1 `GRUBlockCell` (tf.contrib.rnn.GRUBlockCell, GRUBlockCellV2): one fused op per step whose
inputs are the gates kernel and bias (r, u) and the candidate kernel and bias. It computes what
`GRUCell` does, so it converts the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnexport_converters.tf1.cells.base import Step
from rnnexport_converters.tf1.cells.gru import GruMatch
from rnnexport_converters.tf1.graph import GraphView
from rnnexport.errors import UnsupportedModelError


@dataclass(frozen=True, kw_only=True)
class BlockGruMatch(GruMatch):
    title = "GRUBlockCell"

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "block": True}


def match(view: GraphView, op: Any, known: Sequence[str]) -> BlockGruMatch | None:
    if op.type != "GRUBlockCell":
        return None
    # Inputs: x, h_prev, w_ru, w_c, b_ru, b_c; outputs: r, u, c, h.
    weights = [view.weight(op.inputs[k]) for k in (2, 3, 4, 5)]
    if None in weights:
        raise UnsupportedModelError(f"op '{op.name}' (GRUBlockCell) does not read its weights from variables")
    h = op.outputs[3]
    step = Step(op.inputs[0].name, (op.inputs[1].name,), (h.name,), h.name, frozenset({op.name}))
    kernel, candidate, bias, candidate_bias = weights
    return BlockGruMatch(kernel=kernel, activation="tanh", step=step, bias=bias, candidate=candidate,
                         candidate_bias=candidate_bias)
