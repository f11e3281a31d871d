"""A Keras GRU as traced, from its candidate activation: h = z * h_prev + (1 - z) * act(x_h + rec),
with rec = r * (h.U_h + b_h) (reset_after=True) or (r * h).U_h (reset_after=False, Keras 2.0's
form), the gates sigmoids or Keras 2's hard sigmoid.

Each gate's input and recurrent parts are either slices (z, r, h) of one product (Keras 3,
`implementation=2`) or MatMuls of their own by slices of the kernels (`implementation=1`, sliced
before the loop by Keras 2.0-2.3, inside it by tf.keras). The weights join back into Keras's
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

# Where a walk back from a gate term leaves the step: the loop's entry, inputs and weights.
STEP_BOUNDS = {"Merge", "Enter", "Placeholder", "PlaceholderWithDefault", "Const", "VariableV2", "VarHandleOp"}


@dataclass(frozen=True, kw_only=True)
class KerasGruMatch(KerasMatch):
    kind = "gru"
    title = "keras GRU"
    layer = "GRU"

    # The weights of each side in gate order (z, r, h): one whole product or one per gate.
    kernels: tuple[str, ...]
    recurrent_kernels: tuple[str, ...]
    recurrent_biases: tuple[str, ...]
    reset_after: bool

    def weights(self) -> dict[str, str]:
        roles = {f"kernel_{i}": k for i, k in enumerate(self.kernels)}
        roles.update({f"recurrent_kernel_{i}": k for i, k in enumerate(self.recurrent_kernels)})
        roles.update({f"bias_{i}": b for i, b in enumerate(self.biases)})
        roles.update({f"recurrent_bias_{i}": b for i, b in enumerate(self.recurrent_biases)})
        return roles

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "reset_after": self.reset_after}

    def details(self, cell: Cell) -> list[str]:
        return [*super().details(cell), *([] if self.reset_after else ["reset_after=False"])]

    def cell(self, view: GraphView, key: str, steps: Sequence[Step]) -> Cell:
        def joined(names: Sequence[str], width: int) -> np.ndarray:
            if not names:
                return np.zeros(width, np.float32)
            return np.concatenate([traced.value(view, n) for n in names], axis=-1)

        kernel = joined(self.kernels, 0)
        recurrent = joined(self.recurrent_kernels, 0)
        bias = joined(self.biases, kernel.shape[1])
        if self.reset_after:
            bias = np.stack([bias, joined(self.recurrent_biases, kernel.shape[1])])  # as Keras keeps them
        units = recurrent.shape[0]
        weights = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
        return Cell(key, units, kernel.shape[0], units, weights, self, tuple(steps))

    def keras_options(self) -> dict[str, Any]:
        return {**super().keras_options(), "reset_after": self.reset_after}


@dataclass
class _Side:
    """One side (input or recurrent) of the gates: its MatMuls and biases in gate order, each used
    once, and the columns each gate takes of them."""

    matmuls: list[Any]
    biases: list[str]

    def add(self, view: GraphView, part: Any, gate: int, units: int, ops: set[str], near: Any) -> None:
        """Record `part`, gate `gate`'s term of this side: a product of its own or a slice of one."""
        source, first = part, None
        if part.op.type in traced.SLICES and traced.weight(view, part) is None:
            source, first = traced.sliced_source(part), traced.offset(view, part)
            ops.add(part.op.name)
        found = patterns.terms(view, source, ops)
        if found is None or len(found[0]) != 1 or len(found[1]) > 1:
            raise UnsupportedModelError(f"op '{near.name}': a GRU gate term is not one MatMul (and a bias)")
        (matmul,), biases = found
        names = [m.name for m in self.matmuls]
        if matmul.name not in names:
            names.append(matmul.name)
            self.matmuls.append(matmul)
            self.biases += biases
        start = sum(int(m.inputs[1].shape[-1]) for m in self.matmuls[:names.index(matmul.name)])
        if first is not None and start + first != gate * units:
            raise UnsupportedModelError(f"op '{part.op.name}': the GRU's gate slices are not in Keras's order (z, r, h)")


def _parts(view: GraphView, tensor: Any, h_prev: Any, ops: set[str]) -> tuple[Any, Any] | None:
    """(input part, recurrent part) of a gate's pre-activation `x_part + h_part`."""
    add = tensor.op
    if add.type not in ADDS:
        return None
    ops.add(add.name)
    a, b = add.inputs[0], add.inputs[1]
    return (b, a) if _reads(view, a, h_prev) else (a, b)


def _reads(view: GraphView, tensor: Any, h_prev: Any) -> bool:
    """True when a gate term is computed from the state within the step (the input term never is)."""
    todo, seen = [tensor], set()
    while todo:
        t = todo.pop()
        if t.name == h_prev.name:
            return True
        if t.op.name in seen or t.op.type in STEP_BOUNDS:
            continue
        seen.add(t.op.name)
        todo.extend(t.op.inputs)
    return False


def match(view: GraphView, op: Any, known: Sequence[str]) -> KerasGruMatch | None:
    if op.type not in ACTIVATIONS or op.type in ("Identity", "Sigmoid"):
        return None
    act, ops = op, {op.name}
    mix = view.users(act.outputs[0], {"Mul"})
    sub = patterns.other(mix[0], act.outputs[0]).op if len(mix) == 1 else None
    z = traced.gate(view, sub.inputs[1].op, ops) if sub is not None and sub.type == "Sub" else None
    new_h = view.users(mix[0].outputs[0], ADDS) if z is not None else []
    blend = patterns.other(new_h[0], mix[0].outputs[0]).op if len(new_h) == 1 else None
    if blend is None or blend.type != "Mul" or view.scalar(sub.inputs[0]) != 1.0:
        log.debug("op '%s': not a GRU's candidate (z * h + (1 - z) * act)", op.name)
        return None
    h_prev = next((t for t in blend.inputs if t.op.name != sub.inputs[1].op.name), None)
    ops.update({mix[0].name, sub.name, new_h[0].name, blend.name})
    units = int(act.outputs[0].shape[-1])
    x_side, h_side = _Side([], []), _Side([], [])
    # A TF1 GRUCell has the same blend, but its candidate is one MatMul of concat([x, r * h]).
    x_h, rec = _parts(view, act.inputs[0], h_prev, ops) or (None, None)
    reset = rec.op if rec is not None else None
    reset_after = reset is not None and reset.type == "Mul"
    product = reset if reset_after else reset.inputs[0].op if reset is not None and reset.type == "MatMul" else None
    r_out = next((t for t in product.inputs if traced.gate(view, t.op, set())), None) if (
        product is not None and product.type == "Mul") else None
    if h_prev is None or r_out is None:
        log.debug("op '%s': the GRU candidate is not x_h plus a reset-gated recurrent term", op.name)
        return None
    r = traced.gate(view, r_out.op, ops)
    if r[1] != z[1]:
        raise UnsupportedModelError(f"op '{product.name}': the GRU's reset and update gates use different "
                                    f"activations ({r[1]}, {z[1]})")
    ops.add(product.name)
    gates = [_parts(view, z[0], h_prev, ops), _parts(view, r[0], h_prev, ops)]
    if any(g is None for g in gates):
        raise UnsupportedModelError(f"op '{act.name}': a GRU gate is not an input term plus a recurrent one")
    for index, (x_part, h_part) in enumerate(gates):
        x_side.add(view, x_part, index, units, ops, act)
        h_side.add(view, h_part, index, units, ops, act)
    x_side.add(view, x_h, 2, units, ops, act)
    if reset_after:
        h_side.add(view, patterns.other(product, r_out), 2, units, ops, act)
    else:
        if patterns.other(product, r_out).name != h_prev.name or traced.weight(view, reset.inputs[1], ops) is None:
            raise UnsupportedModelError(f"op '{reset.name}' does not multiply the reset state by a weight")
        ops.add(reset.name)
        h_side.matmuls.append(reset)
    if h_side.biases and not reset_after:
        raise UnsupportedModelError(f"op '{act.name}': a GRU with reset_after=False adds no recurrent bias")
    state_reads = [m.inputs[0].name for m in h_side.matmuls if m is not reset or reset_after]
    if len({m.inputs[0].name for m in x_side.matmuls}) != 1 or set(state_reads) != {h_prev.name}:
        raise UnsupportedModelError(f"op '{act.name}': the GRU's gates do not read one input and one state")
    ops |= traced.initial_ops([h_prev])
    out = new_h[0].outputs[0]
    step = Step(x_side.matmuls[0].inputs[0].name, (h_prev.name,), (out.name,), out.name, frozenset(ops))
    kernels = tuple(traced.weight(view, m.inputs[1]) for m in x_side.matmuls)
    recurrents = tuple(traced.weight(view, m.inputs[1]) for m in h_side.matmuls)
    return KerasGruMatch(kernel=kernels[0], activation=patterns.activation(act), step=step,
                         recurrent_kernel=recurrents[0], biases=tuple(x_side.biases), recurrent_activation=z[1],
                         kernels=kernels, recurrent_kernels=recurrents, recurrent_biases=tuple(h_side.biases),
                         reset_after=reset_after)
