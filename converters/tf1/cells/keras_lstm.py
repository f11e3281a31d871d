"""A Keras LSTM as traced, from its candidate activation: c = f * c_prev + i * act(x_c + h.U_c),
h = o * act(c), the gates sigmoids or Keras 2's hard sigmoid.

With `implementation=2` the four pre-activations are slices (i, f, c, o) of one z = x.W + h.U (+ b);
with `implementation=1` each gate has MatMuls of its own by a slice of the kernels (Keras 2.0-2.3
slice them before the loop, tf.keras inside it). Either way the weights join back into Keras's
kernel, recurrent_kernel and bias.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport_converters.tf1.cells import patterns, traced
from rnnexport_converters.tf1.cells.base import Cell, Step
from rnnexport_converters.tf1.cells.keras_traced import KerasMatch
from rnnexport_converters.tf1.graph import ACTIVATIONS, ADDS, GraphView
from rnnexport.errors import UnsupportedModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KerasLstmMatch(KerasMatch):
    kind = "lstm"
    title = "keras LSTM"
    layer = "LSTM"

    # Per gate (i, f, c, o) with implementation=1; the whole weight alone with implementation=2.
    kernels: tuple[str, ...]
    recurrent_kernels: tuple[str, ...]

    def weights(self) -> dict[str, str]:
        roles = {f"kernel_{i}": k for i, k in enumerate(self.kernels)}
        roles.update({f"recurrent_kernel_{i}": k for i, k in enumerate(self.recurrent_kernels)})
        roles.update({f"bias_{i}": b for i, b in enumerate(self.biases)})
        return roles

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        def joined(names: Sequence[str]) -> np.ndarray:
            return np.concatenate([traced.value(view, n) for n in names], axis=-1)

        kernel, recurrent = joined(self.kernels), joined(self.recurrent_kernels)
        bias = joined(self.biases) if self.biases else np.zeros(kernel.shape[1], np.float32)
        units = recurrent.shape[0]
        weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
        return Cell(key, units, kernel.shape[0], units, weights, self, tuple(steps))


def _gated(view: GraphView, product: Any, tensor: Any, ops: set[str]) -> tuple[Any, str] | None:
    """(pre-activation, activation) of the gate that Mul `product` applies to `tensor`."""
    return traced.gate(view, patterns.other(product, tensor).op, ops)


def _reads_state(view: GraphView, mm: Any, c_prev: Any) -> bool:
    """True when a MatMul reads the LSTM's h: a loop variable, a zero state, or o * act(c_prev)."""
    t = mm.inputs[0]
    if traced.carried(view, t) is not None or traced.zero(t):
        return True
    made = view.through(t).op
    return made.type == "Mul" and any(i.op.inputs and view.through(i.op.inputs[0]).name == view.through(c_prev).name
                                      for i in made.inputs)


def _sides(view: GraphView, pair: list[Any], units: int, known: Sequence[str], c_prev: Any) -> tuple[Any, Any]:
    """(input MatMul, recurrent MatMul) of one x.W + h.U."""
    state = [m for m in pair if _reads_state(view, m, c_prev)]
    if len(state) == 1:
        return (pair[1], pair[0]) if state[0] is pair[0] else (pair[0], pair[1])
    return patterns.input_and_recurrent(view, pair, units, list(known))


def _products(view: GraphView, pres: list[Any], units: int, ops: set[str], near: Any) -> list[tuple[list, list]]:
    """Each gate's (MatMuls, biases): one z sliced four ways, or four sums of their own."""
    if all(p.op.type in traced.SLICES and traced.weight(view, p) is None for p in pres):
        sources = {traced.sliced_source(p).name for p in pres}
        offsets = [traced.offset(view, p) for p in pres]
        if len(sources) != 1 or offsets != [g * units for g in range(4)]:
            log.debug("op '%s': the gates are not slices (i, f, c, o) of one product, as Keras cuts them", near.name)
            return []
        ops.update(p.op.name for p in pres)
        found = patterns.terms(view, traced.sliced_source(pres[0]), ops)
        return [found] if found is not None else []
    found = [patterns.terms(view, p, ops) for p in pres]
    return [f for f in found if f is not None] if all(f is not None for f in found) else []


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasLstmMatch | None:
    # A Sigmoid is a gate; Identity is no op Keras emits for a linear activation.
    if op.type not in ACTIVATIONS or op.type in ("Identity", "Sigmoid"):
        return None
    act, ops = op, {op.name}
    writes = view.users(act.outputs[0], {"Mul"})
    write_gate = _gated(view, writes[0], act.outputs[0], ops) if len(writes) == 1 else None
    new_c = view.users(writes[0].outputs[0], ADDS) if write_gate else []
    keep = patterns.other(new_c[0], writes[0].outputs[0]).op if len(new_c) == 1 else None
    forget = next(((t, g) for t in keep.inputs if (g := traced.gate(view, t.op, ops))), None) if (
        keep is not None and keep.type == "Mul") else None
    if forget is None:
        log.debug("op '%s': not an LSTM's candidate (act * gate added to gate * c_prev)", op.name)
        return None
    c_prev = patterns.other(keep, forget[0])
    new_c = new_c[0]
    # A TF1 LSTMCell has the same candidate but clips or projects between c and h, and computes
    # its gates from one MatMul of concat([x, h]): its own matcher reads it.
    act_c = [u for u in view.users(new_c.outputs[0]) if u.type == act.type]
    h = [u for u in view.users(act_c[0].outputs[0], {"Mul"})
         if traced.gate(view, patterns.other(u, act_c[0].outputs[0]).op, set())] if len(act_c) == 1 else []
    output_gate = _gated(view, h[0], act_c[0].outputs[0], ops) if len(h) == 1 else None
    units = int(act.outputs[0].shape[-1])
    pres = [write_gate[0], forget[1][0], act.inputs[0], output_gate[0]] if output_gate else []
    products = _products(view, pres, units, ops, act) if pres else []
    if not products or any(len(m) != 2 or len(b) > 1 for m, b in products):
        log.debug("op '%s': the LSTM's gates are not x.W + h.U (+ b)", op.name)
        return None
    act_c, h = act_c[0], h[0]
    functions = {g[1] for g in (write_gate, forget[1], output_gate)}
    if len(functions) != 1:
        raise UnsupportedModelError(f"op '{h.name}': the LSTM's gates use different activations "
                                    f"({', '.join(sorted(functions))})")
    ops.update(each.name for each in (writes[0], new_c, keep, act_c, h))
    sides = [_sides(view, m, units, known, c_prev) for m, _ in products]
    if len({x.inputs[0].name for x, _ in sides}) != 1 or len({r.inputs[0].name for _, r in sides}) != 1:
        raise UnsupportedModelError(f"op '{act.name}': the LSTM's gates do not read one input and one state")
    biases = [b for _, bs in products for b in bs]
    if biases and len(biases) != len(products):
        raise UnsupportedModelError(f"op '{act.name}': some of the LSTM's gates add a bias and some do not")
    x_mm, h_mm = sides[0]
    ops |= traced.initial_ops([c_prev, h_mm.inputs[0]])
    step = Step(x_mm.inputs[0].name, (c_prev.name, h_mm.inputs[0].name), (new_c.outputs[0].name, h.outputs[0].name),
                h.outputs[0].name, frozenset(ops))
    kernels = tuple(traced.weight(view, x.inputs[1]) for x, _ in sides)
    recurrents = tuple(traced.weight(view, r.inputs[1]) for _, r in sides)
    return KerasLstmMatch(kernel=kernels[0], activation=patterns.activation(act), step=step,
                          recurrent_kernel=recurrents[0], biases=tuple(biases), recurrent_activation=functions.pop(),
                          kernels=kernels, recurrent_kernels=recurrents)
