"""TF1 `LSTMBlockCell`: one fused op per step, its weights, forget bias, clip and peepholes its
inputs and attributes. It computes what `LSTMCell` does, so it converts the same way."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnexport_converters.tf1.cells.base import Step
from rnnexport_converters.tf1.cells.lstm import LstmMatch
from rnnexport_converters.tf1.graph import GraphView
from rnnexport.errors import UnsupportedModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BlockLstmMatch(LstmMatch):
    title = "LSTMBlockCell"

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "block": True}


def match(view: GraphView, op: Any, known: Sequence[str]) -> BlockLstmMatch | None:
    if op.type != "LSTMBlockCell":
        return None
    clip = op.get_attr("cell_clip")
    peepholes = tuple(view.weight(op.inputs[k]) for k in (4, 5, 6)) if op.get_attr("use_peephole") else (None,) * 3
    cs, h = op.outputs[1], op.outputs[6]
    step = Step(op.inputs[0].name, (op.inputs[1].name, op.inputs[2].name), (cs.name, h.name), h.name,
                frozenset({op.name}))
    kernel = view.weight(op.inputs[3])
    if kernel is None:
        raise UnsupportedModelError(f"op '{op.name}' (LSTMBlockCell) does not read its weights from a variable")
    return BlockLstmMatch(kernel=kernel, activation="tanh", step=step, bias=view.weight(op.inputs[7]),
                          forget_bias=op.get_attr("forget_bias"), cell_clip=clip if clip > 0 else None,
                          proj_clip=None, projection=None, peepholes=peepholes)
